"""Bring-up on isolated hosts: zoo_ray against bare ``ray start`` and ray.util.spark, 2-6 hosts.

    sudo python benchmarks/isolated_scale.py [--hosts 2 4 6] [--no-peer] [--top]

Starts its own local Hadoop with isolated hosts (one network namespace, address and
hostname per NodeManager; needs root), sized so that each host holds exactly one
executor of one core. For every size N it measures, each in a fresh driver process:

1. zoo_ray: ``RayContext.init()`` on N executors, until every node is registered
   (N executor nodes + the gateway's node);
2. the floor on the same hosts: a bare ``ray start --head`` in host 0, then every
   worker's ``ray start`` in parallel (hosts 1..N-1 and the gateway), token auth on,
   timed until the GCS lists every node;
3. ``ray.util.spark.setup_ray_cluster`` with N worker nodes, where it runs.

Wall time and the machine's CPU time (user + system, all processes) are printed for
each, with the CPU time by kind of process (Ray's daemons, ``ray start``, the
managers, PySpark's Python workers, the JVMs, the driver) for zoo_ray and the
floor, the managers' start intervals (from their logs) to show that the nodes
start in parallel, and the ratios the goals are set on.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

#: What a process is, by its name or command line (first match), for the CPU table.
KINDS = [
    # The JVMs first: their class paths name pyspark.
    ("CoarseGrainedExecutorBackend", "executor JVMs"), ("ExecutorLauncher", "Spark AM"),
    ("ApplicationMaster", "Spark AM"), ("SparkSubmit", "driver JVM"),
    ("NodeManager", "NodeManagers"), ("ResourceManager", "ResourceManager"),
    ("DataNode", "HDFS"), ("NameNode", "HDFS"),
    ("dashboard/agent.py", "dashboard agent"),
    ("runtime_env/agent", "runtime env agent"), ("dashboard.py", "dashboard"),
    ("log_monitor", "log monitor"), ("monitor.py", "autoscaler monitor"),
    ("default_worker", "Ray workers"), ("ray::", "Ray workers"),
    ("ray.scripts.scripts", "ray start"), ("bin/ray", "ray start"),
    ("zoo_ray.manager", "RayManager"), ("pyspark", "PySpark workers"),
]


def cpu_snapshot() -> dict[tuple[int, float], tuple[str, float, str]]:
    """{(pid, start time): (kind, CPU seconds so far, command line)} of every process on
    the machine."""
    snapshot = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None:
            continue
        line = " ".join(info["cmdline"] or [])
        if info["pid"] == os.getpid():
            kind = "driver"
        elif info["name"] in ("raylet", "gcs_server"):
            kind = info["name"]
        else:
            kind = next((k for needle, k in KINDS if needle in line), "other")
        snapshot[(info["pid"], info["create_time"])] = (
            kind, info["cpu_times"].user + info["cpu_times"].system, line[:160])
    return snapshot


def _spent(before: dict, after: dict) -> list[tuple[float, str, str]]:
    """(CPU seconds between two snapshots, kind, command line) of each process alive at the
    second, most first."""
    return sorted(((seconds - before.get(key, (kind, 0.0, line))[1], kind, line)
                   for key, (kind, seconds, line) in after.items()), reverse=True)


def cpu_by_kind(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by kind (processes alive at the second)."""
    spent: dict[str, float] = {}
    for seconds, kind, _ in _spent(before, after):
        spent[kind] = spent.get(kind, 0.0) + seconds
    return {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def cpu_top(before: dict, after: dict, count: int = 25) -> list[str]:
    """The ``count`` processes that spent the most CPU between two snapshots."""
    return [f"{seconds:5.2f}s {kind:18s} {line}"
            for seconds, kind, line in _spent(before, after)[:count]]


_ZOO_RAY = textwrap.dedent("""
    import json, re, sys, time
    from datetime import datetime
    from pathlib import Path
    from zoo_ray import RayContext, init_spark_on_yarn
    import psutil
    sys.path.insert(0, sys.argv[3])
    from isolated_scale import cpu_by_kind, cpu_snapshot, cpu_top
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=int(sys.argv[2]),
                            executor_cores=1, executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g")
    cpu, processes = psutil.cpu_times(), cpu_snapshot()
    started = time.monotonic()
    ctx = RayContext(sc, object_store_memory="128m")
    info = ctx.init()
    wall = time.monotonic() - started
    now = cpu_snapshot()
    after, by_kind, top = psutil.cpu_times(), cpu_by_kind(processes, now), cpu_top(processes, now)
    spans = []
    for node in info["nodes"]:
        log = (Path(node["log_dir"]) / "ray_manager.log").read_text()
        stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                  for line in log.splitlines()
                  if "started ray node" in line or "node is up" in line]
        spans.append(stamps[:1] + stamps[-1:])
    print(json.dumps({"wall_s": wall, "cpu_s": (after.user + after.system)
                      - (cpu.user + cpu.system), "spans": spans, "cpu_by_kind": by_kind,
                      "cpu_top": top}), flush=True)
    ctx.stop()
    sc.stop()
""")

_PEER = textwrap.dedent("""
    import json, os, secrets, sys, time
    token = secrets.token_urlsafe(32)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PYSPARK_PYTHON=sys.executable)
    import psutil
    from pyspark.sql import SparkSession
    workers = int(sys.argv[2])
    spark = (SparkSession.builder.master("yarn").appName("ray-util-spark")
             .config("spark.executor.instances", str(workers)).config("spark.executor.cores", "1")
             .config("spark.executor.memory", "512m").config("spark.driver.memory", "512m")
             .config("spark.executor.memoryOverhead", "1408m")
             .config("spark.driver.host", sys.argv[3])
             .config("spark.executorEnv.RAY_AUTH_MODE", "token")
             .config("spark.executorEnv.RAY_AUTH_TOKEN", token)
             .config("spark.executorEnv.PATH", os.environ["PATH"])
             .getOrCreate())
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1 < workers:
        time.sleep(0.5)
    from ray.util.spark import setup_ray_cluster, shutdown_ray_cluster
    cpu = psutil.cpu_times()
    started = time.monotonic()
    setup_ray_cluster(max_worker_nodes=workers, num_cpus_worker_node=1, num_gpus_worker_node=0,
                      object_store_memory_worker_node=128 * 2**20)
    wall = time.monotonic() - started
    after = psutil.cpu_times()
    print(json.dumps({"wall_s": wall, "cpu_s": (after.user + after.system)
                      - (cpu.user + cpu.system)}), flush=True)
    shutdown_ray_cluster()
    spark.stop()
""")

_REGISTERED = textwrap.dedent("""
    import sys, time
    from ray._raylet import GcsClient
    print("ready", flush=True)
    sys.stdin.readline()  # the head's GCS is up
    client, wanted = GcsClient(address=sys.argv[1]), int(sys.argv[2])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            alive = [n for n in client.get_all_node_info().values() if n.state == 0]
            if len(alive) >= wanted:
                print("registered", flush=True)
                break
        except Exception:
            pass
        time.sleep(0.05)
""")


def _json_line(result: subprocess.CompletedProcess) -> dict:
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not open within {timeout}s")


def floor(network, size: int, work: Path) -> dict:
    """Bare ``ray start`` in the namespaces: head, then every worker at once."""
    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    head = network.hosts[0]
    port = 6379
    ray_start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                 "--disable-usage-stats", "--num-cpus=1", "--object-store-memory=134217728"]
    address = f"{head.ip}:{port}"
    # The poller imports Ray before the clock starts: the floor pays no interpreter start.
    poller = subprocess.Popen([sys.executable, "-c", _REGISTERED, address, str(size + 1)],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert poller.stdout is not None and poller.stdin is not None
    poller.stdout.readline()
    procs = []
    cpu, processes = psutil.cpu_times(), cpu_snapshot()
    started = time.monotonic()
    try:
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", head.netns, *ray_start, "--head", f"--port={port}",
             f"--node-ip-address={head.ip}", f"--temp-dir={work / 'h0'}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        _wait_port(head.ip, port, 120)
        workers = [(["ip", "netns", "exec", h.netns], h.ip, f"h{i}")
                   for i, h in enumerate(network.hosts[1:size], start=1)]
        workers.append(([], network.gateway_ip, "gateway"))
        for prefix, ip, name in workers:
            procs.append(subprocess.Popen(
                [*prefix, *ray_start, f"--address={address}", f"--node-ip-address={ip}",
                 f"--temp-dir={work / name}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        poller.stdin.write("go\n")
        poller.stdin.flush()
        registered = poller.stdout.readline()
        wall = time.monotonic() - started
        now = cpu_snapshot()
        after, by_kind, top = (psutil.cpu_times(), cpu_by_kind(processes, now),
                               cpu_top(processes, now))
        if "registered" not in registered:
            raise RuntimeError("the floor's nodes did not register within 300 s")
    finally:
        poller.kill()
        poller.wait()
        for proc in procs:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
    return {"wall_s": wall, "cpu_s": (after.user + after.system) - (cpu.user + cpu.system),
            "cpu_by_kind": by_kind, "cpu_top": top}


def _overlap(spans: list[list[float]]) -> str:
    starts, ends = [s[0] for s in spans], [s[-1] for s in spans]
    first = min(starts)
    parts = [f"{s - first:.1f}-{e - first:.1f}s" for s, e in sorted(zip(starts, ends))]
    together = max(0.0, min(ends) - max(starts))
    return f"{', '.join(parts)} (all {len(spans)} running together for {together:.1f}s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--no-peer", action="store_true", help="skip ray.util.spark")
    parser.add_argument("--top", action="store_true",
                        help="also list the processes that spent the most CPU")
    args = parser.parse_args()

    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    spec = MiniClusterSpec(nodemanagers=max(args.hosts), nm_memory_mb=3072, nm_vcores=4,
                           isolated_hosts=True)
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="zoo-ray-scale-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            network = cluster.network
            print("hosts: " + ", ".join(f"{h.hostname}={h.ip}" for h in network.hosts)
                  + f"; gateway {network.gateway_ip}", flush=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
            env["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
            env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
            conf = str(cluster.hadoop_conf_dir)
            # The first application on fresh hosts localises the environment: not timed.
            here = os.path.dirname(os.path.abspath(__file__))
            subprocess.run([sys.executable, "-c", _ZOO_RAY, conf, str(max(args.hosts)), here],
                           env=env, capture_output=True, text=True, timeout=1800)
            for size in args.hosts:
                figures = results.setdefault(size, {})
                figures["zoo_ray"] = _json_line(subprocess.run(
                    [sys.executable, "-c", _ZOO_RAY, conf, str(size), here], env=env,
                    capture_output=True, text=True, timeout=1200))
                figures["floor"] = floor(network, size, Path(tmp) / f"floor-{size}")
                if not args.no_peer:
                    try:
                        figures["ray_util_spark"] = _json_line(subprocess.run(
                            [sys.executable, "-c", _PEER, conf, str(size), network.gateway_ip],
                            env=env, capture_output=True, text=True, timeout=1200))
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        figures["ray_util_spark"] = {"error": str(exc)[-400:]}
                for name, value in figures.items():
                    shown = {k: v for k, v in value.items() if k not in ("spans", "cpu_top")}
                    print(f"{size} hosts\t{name}\t{json.dumps(shown)}", flush=True)
                    if args.top:
                        print("\n".join(f"    {line}" for line in value.get("cpu_top", [])))
                print(f"{size} hosts\tmanager start intervals\t"
                      f"{_overlap(figures['zoo_ray']['spans'])}", flush=True)
    for size, figures in results.items():
        ratio = figures["zoo_ray"]["wall_s"] / figures["floor"]["wall_s"]
        print(f"{size} hosts\tzoo_ray/floor wall\t{ratio:.2f}  (goal <= 1.5)")
    low, high = min(results), max(results)
    ours = results[high]["zoo_ray"]["wall_s"] - results[low]["zoo_ray"]["wall_s"]
    bare = results[high]["floor"]["wall_s"] - results[low]["floor"]["wall_s"]
    print(f"growth {low}->{high} hosts\tzoo_ray {ours:+.1f}s\tfloor {bare:+.1f}s\t"
          f"goal: zoo_ray's growth < 1.5 x the floor's ({1.5 * bare:+.1f}s)")


if __name__ == "__main__":
    main()
