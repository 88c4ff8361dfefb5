"""The suite's network-facing tests on isolated hosts: each NodeManager in its own namespace.

Three hosts, each with its own address in 198.18.0.0/15, hostname and hosts file; the
gateway (this process) on the bridge. The RayContext and data-path tests that exercise
the network (:mod:`tests.e2e.scenarios`) run here again, unchanged, against this cluster
(the module's ``cluster`` fixture replaces the session's, and its application and
RayContext the shared ones); the tests below add what only many hosts can show. Its
fault matrix runs on the module's one RayContext, one fault after the other.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from tests.e2e import scenarios
from tests.e2e.helpers import executor_nodes, running, wait_app_end, wait_until
from tests.fresh import env_without_ray

from zoo_ray.errors import ClusterLostError, IsolatedHostsUnavailableError
from zoo_ray.minicluster import MiniCluster, MiniClusterSpec
from zoo_ray.minicluster.netns import Network

ray = pytest.importorskip("ray")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="isolated hosts need root (CI is root)"),
    pytest.mark.faults,
]

#: One executor container (1920 MB) fits a host, two do not: every executor gets a host.
SPEC = MiniClusterSpec(nodemanagers=3, nm_memory_mb=3072, nm_vcores=4, isolated_hosts=True)
EXECUTORS = 3
SPARK_ARGS = dict(num_executors=EXECUTORS, executor_cores=1, executor_memory="512m",
                  driver_memory="512m", extra_executor_memory_for_ray="1g")
OBJECT_STORE_MEMORY = "256m"
CUT_S = 60  # seconds a worker host is cut off (the figure)


def _cli(*args: str, user: list[str] | None = None, timeout: float = 300):
    return subprocess.run([*(user or []), sys.executable, "-m", "zoo_ray.cli", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _namespace_pids(netns: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                         timeout=30).stdout
    return {int(pid) for pid in out.split()}


# --------------------------------------------------------------- up and down
def test_without_root_up_fails_at_once_naming_the_fix():
    # Not under tmp_path: its parents are root's alone.
    target = Path(tempfile.mkdtemp(prefix="zoo-ray-nobody-"))
    target.chmod(0o777)
    try:
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        started = time.monotonic()
        result = _cli("minicluster", "up", "--isolated-hosts", "--dir", str(target), user=nobody)
        print(f"refused after {time.monotonic() - started:.1f}s: {result.stderr.strip()}")
        assert result.returncode != 0
        assert "need root" in result.stderr and "leave out --isolated-hosts" in result.stderr
        assert Network.plan(target.resolve(), 2).leftovers() == []
        assert list(target.iterdir()) == []
    finally:
        shutil.rmtree(target)


def test_a_subnet_another_interface_uses_is_refused_naming_it(tmp_path):
    network = Network.plan(tmp_path.resolve(), 1)
    other = "zrtestother0"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True, timeout=30)
    try:
        address = ipaddress.ip_address(network.gateway_ip) + 100
        subprocess.run(["ip", "addr", "add", f"{address}/24", "dev", other], check=True,
                       timeout=30)
        with pytest.raises(IsolatedHostsUnavailableError, match=other):
            network.create()
        assert network.leftovers() == []
    finally:
        subprocess.run(["ip", "link", "del", other], timeout=30)


def test_up_after_a_killed_run_cleans_up_and_down_removes_every_namespace(tmp_path):
    target = (tmp_path / "hadoop").resolve()
    network = Network.plan(target, 2)
    up = ["minicluster", "up", "--isolated-hosts", "--nodemanagers", "2", "--nm-memory-mb",
          "1024", "--dir", str(target)]
    try:
        first = _cli(*up)
        assert first.returncode == 0, first.stderr[-3000:]
        status = json.loads(_cli("minicluster", "status", "--dir", str(target)).stdout)
        assert status["hosts"] == [{"hostname": h.hostname, "ip": h.ip, "netns": h.netns}
                                   for h in network.hosts]
        assert {n["id"].rsplit(":", 1)[0] for n in status["nodemanagers"]} == {
            h.ip for h in network.hosts}
        # A crash: every daemon killed, nothing cleaned up.
        for daemon in status["daemons"].values():
            os.kill(daemon["pid"], signal.SIGKILL)
        wait_until(
            lambda: not any(running(d["pid"]) for d in status["daemons"].values()), 30,
            "the killed daemons to end")
        assert len(network.leftovers()) == 2 * 2 + 1 + 2  # namespaces, veths, bridge, /etc/netns
        again = _cli(*up)
        assert again.returncode == 0, again.stderr[-3000:]
        daemons = json.loads(_cli("minicluster", "status", "--dir", str(target)).stdout)[
            "daemons"]
    finally:
        down = _cli("minicluster", "down", "--dir", str(target))
    assert down.returncode == 0, down.stderr[-3000:]
    assert network.leftovers() == []
    assert not any(running(d["pid"]) for d in daemons.values())


# ------------------------------------------------------ the module's cluster
@pytest.fixture(scope="module")
def cluster(own_cluster: MiniCluster) -> MiniCluster:
    """Three isolated hosts; replaces the session's cluster for every test in this module."""
    return own_cluster


@pytest.fixture
def sc(module_sc):
    """The module's application, on the isolated hosts (``SPARK_ARGS``)."""
    return module_sc


@pytest.fixture
def ray_ctx(module_ray_ctx):
    """The module's RayContext: the fault matrix below runs on it, one fault at a time."""
    return module_ray_ctx


@pytest.fixture
def spark(module_spark):
    return module_spark


def _hosts(cluster: MiniCluster) -> dict[str, str]:
    network = cluster.network
    assert network is not None
    return {h.ip: h.hostname for h in network.hosts}


def test_every_node_is_on_a_host_of_its_own_and_the_driver_on_the_gateway(cluster, ray_ctx):
    hosts = _hosts(cluster)
    nodes = ray_ctx.address_info["nodes"]
    assert sorted(n["node_ip"] for n in nodes) == sorted(hosts), "one node per host"
    assert ray_ctx.address.rsplit(":", 1)[0] in hosts, "the head is in an executor"
    assert {n["executor_host"] for n in nodes} == set(hosts), "Spark names executors by address"
    gateway = ray_ctx.address_info["gateway_node"]
    assert gateway["node_ip"] == cluster.network.gateway_ip

    @ray.remote(num_cpus=0)
    def where():
        return socket.gethostname(), ray.util.get_node_ip_address()

    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
    seen = {ray.get(where.options(scheduling_strategy=strategy(n["NodeID"], soft=False)).remote())
            for n in ray.nodes() if n["Alive"]}
    print(f"hosts: {sorted(seen)}")
    assert seen == {(name, ip) for ip, name in hosts.items()} | {
        (socket.gethostname(), cluster.network.gateway_ip)}
    driver_node = ray.get_runtime_context().get_node_id()
    assert [n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == driver_node] == [
        cluster.network.gateway_ip], "the driver attached to the gateway's node"


def test_one_ray_node_per_executor_with_the_head_in_an_executor(ray_ctx, sc):
    scenarios.one_ray_node_per_executor_with_the_head_in_an_executor(ray_ctx, sc)


def test_ordinary_ray_programs_run_on_the_cluster(ray_ctx):
    scenarios.ordinary_ray_programs_run_on_the_cluster()


def test_tasks_and_actors_run_on_every_host(cluster, ray_ctx):
    @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    class Reporter:
        def host(self):
            return socket.gethostname()

    reporters = [Reporter.remote() for _ in range(EXECUTORS)]
    assert sorted(ray.get([r.host.remote() for r in reporters])) == sorted(
        _hosts(cluster).values())
    for reporter in reporters:
        ray.kill(reporter)


def test_a_100mb_object_put_on_one_host_is_read_on_two_others(cluster, ray_ctx):
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
    nodes = [n for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] in _hosts(cluster)]

    @ray.remote(num_cpus=0)
    def produce():
        import numpy as np
        return [ray.put(np.ones(100 * 2**20 // 8))]

    @ray.remote(num_cpus=0)
    def consume(boxed):
        return float(ray.get(boxed[0]).sum()), ray.util.get_node_ip_address()

    boxed = ray.get(produce.options(
        scheduling_strategy=strategy(nodes[0]["NodeID"], soft=False)).remote())
    started = time.monotonic()
    reads = ray.get([consume.options(scheduling_strategy=strategy(n["NodeID"], soft=False))
                     .remote(boxed) for n in nodes[1:]])
    print(f"100 MB read on {len(reads)} other hosts in {time.monotonic() - started:.1f}s")
    assert reads == [(100 * 2**20 // 8, n["NodeManagerAddress"]) for n in nodes[1:]]


_JOIN_WITHOUT_TOKEN = {
    "driver": ["-c", "import ray, sys; ray.init(address=sys.argv[1])"],
    "node": ["-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats"],
}


@pytest.mark.parametrize("who", sorted(_JOIN_WITHOUT_TOKEN))
def test_a_node_or_driver_without_the_token_is_refused_from_another_host(
        cluster, ray_ctx, who, tmp_path):
    head_ip = ray_ctx.address.rsplit(":", 1)[0]
    other = next(h for h in cluster.network.hosts if h.ip != head_ip)
    argv = [sys.executable, *_JOIN_WITHOUT_TOKEN[who]]
    argv += [ray_ctx.address] if who == "driver" else [f"--address={ray_ctx.address}",
                                                       f"--temp-dir={tmp_path / 'ray'}"]
    # The intruder tries 3 times, not Ray's 20 (a second apart): each try is refused alike.
    clean_env = {**env_without_ray(), "RAY_gcs_server_port_wait_time_s": "3"}
    proc = subprocess.Popen(["ip", "netns", "exec", other.netns, *argv], env=clean_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"{who} from {other.ip}: exit {proc.returncode}")
    assert proc.returncode != 0
    assert "Authentication token is missing or incorrect" in out
    assert len([n for n in ray.nodes() if n["Alive"]]) == EXECUTORS + 1
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def _listeners(netns: str, pids: set[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket that ``pids`` listen on in ``netns``."""
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-ltnpH"], capture_output=True,
                         text=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        address, port = fields[3].rsplit(":", 1)
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append((name, address.strip("[]"), int(port)))
    return found


def _reachable_from(netns: str, ip: str, ports: list[int]) -> set[int]:
    probe = textwrap.dedent("""
        import socket, sys
        for port in map(int, sys.argv[2:]):
            with socket.socket() as s:
                s.settimeout(2)
                if s.connect_ex((sys.argv[1], port)) == 0:
                    print(port)
    """)
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe, ip,
                          *map(str, ports)], capture_output=True, text=True, timeout=120)
    return {int(p) for p in out.stdout.split()}


def test_what_each_node_listens_on_and_what_another_host_reaches(cluster, ray_ctx):
    head = ray_ctx.address_info["nodes"][0]
    netns = next(h.netns for h in cluster.network.hosts if h.ip == head["node_ip"])
    family = {head["pid"]} | {p.pid for p in psutil.Process(head["pid"]).children(True)}
    listeners = _listeners(netns, family)
    print("head listens on:\n" + "\n".join(f"  {n:24} {ip}:{port}" for n, ip, port in
                                             sorted(listeners)))
    assert _listeners(netns, {head["pid"]}) == [], "the manager serves nothing; Ray binds the rest"
    other = next(h for h in cluster.network.hosts if h.ip != head["node_ip"])
    ports = sorted({port for _, _, port in listeners})
    reached = _reachable_from(other.netns, head["node_ip"], ports)
    wildcard = {port for _, ip, port in listeners if ip in ("0.0.0.0", "::", "*", "::ffff:0.0.0.0")}
    on_node_ip = {port for _, ip, port in listeners if ip.endswith(head["node_ip"])}
    loopback = {port for _, ip, port in listeners if ip.endswith("127.0.0.1")} - wildcard - \
        on_node_ip
    print(f"from {other.ip}: {len(reached)} of {len(ports)} ports reachable; wildcard-bound "
          f"{sorted(wildcard)}, node-IP-bound {sorted(on_node_ip)}, loopback {sorted(loopback)}")
    assert int(ray_ctx.address.rsplit(":", 1)[1]) in reached, "workers reach the GCS"
    assert reached == wildcard | on_node_ip
    assert not reached & loopback


def test_each_block_lives_on_the_ray_node_of_the_executor_that_computed_it(spark, ray_ctx):
    scenarios.each_block_lives_on_the_ray_node_of_the_executor_that_computed_it(spark, ray_ctx)


def test_to_spark_reads_each_block_in_the_executor_holding_it(spark, sc, ray_ctx):
    scenarios.to_spark_reads_each_block_in_the_executor_holding_it(spark, sc, ray_ctx)


def test_a_spark_task_fetches_a_block_through_ray_when_its_file_is_not_on_its_host(sc, ray_ctx):
    scenarios.a_spark_task_fetches_a_block_through_ray_when_its_file_is_not_on_its_host(
        sc, ray_ctx)


def test_the_token_is_on_no_command_line_environment_spark_conf_or_log(ray_ctx, sc, cluster):
    scenarios.the_token_is_on_no_command_line_environment_spark_conf_or_log(ray_ctx, sc, cluster)


# --------------------------------------------------------------- fault matrix
# Each case as on one address, now across hosts: the figures they print are the matrix's.
def test_a_killed_raylet_is_restarted_and_its_node_reregisters(ray_ctx):
    scenarios.a_killed_raylet_is_restarted_and_its_node_reregisters(ray_ctx, EXECUTORS)


@pytest.mark.parametrize("process", ["raylet", "gcs_server"])
def test_a_killed_head_process_comes_back_with_the_cluster_and_the_driver_carries_on(
        ray_ctx, process):
    scenarios.a_killed_head_process_comes_back_with_the_cluster_and_the_driver_carries_on(
        ray_ctx, process, EXECUTORS)


def test_a_container_killed_by_yarn_is_reported_and_its_replacement_gets_a_ray_node(
        ray_ctx, sc, cluster, caplog):
    scenarios.a_container_killed_by_yarn_is_reported_and_its_replacement_gets_a_ray_node(
        ray_ctx, sc, cluster, caplog)


def test_losing_the_head_s_executor_starts_a_new_cluster_and_the_driver_reconnects(
        ray_ctx, cluster):
    scenarios.losing_the_head_s_executor_starts_a_new_cluster_and_the_driver_reconnects(
        ray_ctx, cluster, EXECUTORS)


def _link(host, state: str) -> None:
    subprocess.run(["ip", "link", "set", host.veth, state], check=True, timeout=30)


def test_a_worker_host_cut_off_for_60s_is_whole_again_and_nothing_hangs(cluster, ray_ctx):
    hosts = {h.ip: h for h in cluster.network.hosts}
    head, worker = ray_ctx.nodes[0], ray_ctx.nodes[-1]
    head_node = [node_id for node_id, info in ray_ctx.executor_nodes().items()
                 if info.container == head["container"]][0]
    on_head = ray.remote(num_cpus=0)(lambda: "answered").options(
        scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            head_node, soft=False))
    before = set(ray_ctx.executor_nodes())
    seen = len(ray_ctx.events())
    _link(hosts[worker["node_ip"]], "down")
    cut = time.monotonic()
    try:
        # The rest of the cluster goes on meanwhile: the driver's calls to the head answer.
        assert ray.get(on_head.remote(), timeout=30) == "answered"
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut)))
    finally:
        _link(hosts[worker["node_ip"]], "up")
    back = time.monotonic()

    def whole():
        # Answers from every executor's node, not only the node table: a raylet declared dead
        # stays in the table until the GCS's health checks give up on it.
        try:
            answered = executor_nodes(timeout=30)
        except (ray.exceptions.RayError, ClusterLostError):  # a node, or the cluster, is going
            return False
        return set(answered.values()) == {n["container"] for n in ray_ctx.nodes}
    wait_until(whole, 180, "every executor's node answering again")
    again = time.monotonic() - back
    # 60 s is about when the GCS's health checks (5 failures of 10 s, 3 s apart) and the
    # raylet's own GCS timeout give up: the node is either kept, or declared dead and
    # started again by its manager, maybe just after the link is back (a check under way
    # then ends within its 10 s, and the node may have answered just before). So whole
    # again after that last verdict too: 15 s after the link came back, and from then on.
    time.sleep(max(0.0, 15 - (time.monotonic() - back)))
    late = wait_until(whole, 120, "every executor's node answering after the last verdict")
    kept = set(ray_ctx.executor_nodes()) == before
    print(f"a worker host cut off for {back - cut:.0f}s: whole again {again:.1f}s after its "
          f"link came back (and {late:.1f}s after the last verdict's window); its raylet "
          f"{'kept' if kept else 'restarted by its manager'}; "
          f"events: {[(e.kind, e.container) for e in ray_ctx.events()[seen:]]}")
    # Shorter than Spark's executor timeout (spark.network.timeout, 120 s): no executor lost.
    assert not [e for e in ray_ctx.events()[seen:] if e.kind in ("lost", "head lost")]
    assert len(ray_ctx.nodes) == EXECUTORS
    assert ray.get(on_head.remote(), timeout=30) == "answered"


def test_stop_removes_every_ray_process_and_init_starts_afresh(ray_ctx, sc):
    scenarios.stop_removes_every_ray_process_and_init_starts_afresh(ray_ctx, sc)


# ------------------------------------------------------------------ teardown
def _per_namespace(cluster: MiniCluster) -> dict[str, int]:
    return {h.hostname: len(_namespace_pids(h.netns)) for h in cluster.network.hosts}


def _ray_in_namespaces(cluster: MiniCluster) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for host in cluster.network.hosts:
        for pid in _namespace_pids(host.netns):
            try:
                name = psutil.Process(pid).name()
            except psutil.NoSuchProcess:
                continue
            if name in ("raylet", "gcs_server") or name.startswith("ray::"):
                found.setdefault(host.hostname, []).append(name)
    return found


_DRIVER = textwrap.dedent("""
    import json, sys
    from zoo_ray import RayContext, init_spark_on_yarn
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=3, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g")
    RayContext(sc, object_store_memory="128m").init()
    print(json.dumps({"app": sc.applicationId}), flush=True)
    sys.stdin.readline()
""")


def _nodemanager_pids(cluster: MiniCluster) -> list[int]:
    return [d["pid"] for name, d in cluster.status()["daemons"].items()
            if name.startswith("nodemanager")]


def _start_driver(cluster: MiniCluster, tmp_path: Path) -> subprocess.Popen[str]:
    """A program with its own application and RayContext; it prints the application id."""
    with open(tmp_path / "driver.err", "w") as stderr:
        return subprocess.Popen([sys.executable, "-c", _DRIVER, str(cluster.hadoop_conf_dir)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                text=True)


def test_after_stop_and_after_kill_9_of_a_driver_no_process_stays_in_any_namespace(
        cluster, sc, ray_ctx, tmp_path):
    ray_ctx.stop()
    assert _ray_in_namespaces(cluster) == {}
    sc.stop()
    hosts = cluster.network.hosts
    nodemanagers = set(_nodemanager_pids(cluster))
    wait_until(lambda: all(_namespace_pids(h.netns) <= nodemanagers for h in hosts),
                      120, "the module's executors to end")
    idle = _per_namespace(cluster)
    assert idle == {h.hostname: 1 for h in hosts}, "only the NodeManager"

    driver = _start_driver(cluster, tmp_path)
    try:
        line = driver.stdout.readline()
        assert line.startswith("{"), Path(tmp_path / "driver.err").read_text()[-3000:]
        busy = _per_namespace(cluster)
        ray_app = _ray_in_namespaces(cluster)
        print(f"processes per host: idle {idle}, with the app {busy}; Ray: "
              f"{ {h: len(p) for h, p in ray_app.items()} }")
        assert set(ray_app) == {h.hostname for h in hosts}
        driver.kill()
        driver.wait()
        started = time.monotonic()
        wait_until(lambda: all(_namespace_pids(h.netns) <= nodemanagers for h in hosts),
                          180, "every process of the killed driver's application to end")
        print(f"namespaces back to the NodeManager alone {time.monotonic() - started:.1f}s "
              "after kill -9 of the driver")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    wait_app_end(cluster, json.loads(line)["app"])


def test_a_nodemanager_killed_with_kill_9_leaves_no_orphan_once_the_application_ends(
        cluster, tmp_path):
    # After the module's own application: this one ends with a NodeManager gone.
    hosts = cluster.network.hosts
    daemons = _nodemanager_pids(cluster)
    driver = _start_driver(cluster, tmp_path)
    try:
        line = driver.stdout.readline()
        assert line.startswith("{"), Path(tmp_path / "driver.err").read_text()[-3000:]
        # A host with an executor and its Ray node (the ApplicationMaster runs in the driver).
        victim = [h for h in hosts if _runs("CoarseGrainedExecutorBackend", h.netns)][0]
        nodemanager = [p for p in _namespace_pids(victim.netns) if p in daemons][0]
        assert psutil.Process(nodemanager).name() == "java"
        os.kill(nodemanager, signal.SIGKILL)
        # YARN learns of a lost NodeManager only after its liveness expiry (10 min by
        # default); until then nothing stops the container, and its Ray node runs on.
        time.sleep(5)
        on_victim = _ray_in_namespaces(cluster).get(victim.hostname, [])
        print(f"5 s after kill -9 of {victim.hostname}'s NodeManager, its Ray processes: "
              f"{sorted(on_victim)}")
        assert "raylet" in on_victim
        driver.stdin.close()  # the program ends: Spark and Ray stop
        ended = time.monotonic()
        driver.wait(120)
        wait_until(lambda: _namespace_pids(victim.netns) == set() and all(
            _namespace_pids(h.netns) <= set(daemons) for h in hosts), 180,
            "every process of the application to end, on the host without a NodeManager too")
        print(f"no process of the application left on any host "
              f"{time.monotonic() - ended:.1f}s after it ended")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    wait_app_end(cluster, json.loads(line)["app"])


def _runs(command: str, netns: str) -> bool:
    """Whether a process in ``netns`` has ``command`` in its command line."""
    for pid in _namespace_pids(netns):
        try:
            if command in " ".join(psutil.Process(pid).cmdline()):
                return True
        except psutil.Error:
            continue
    return False
