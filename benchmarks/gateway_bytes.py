"""Bytes through the gateway: from_spark and to_spark on isolated hosts, against the driver path.

    sudo python benchmarks/gateway_bytes.py [--hosts 2 3] [--rows 2000000] [--columns 10]

Starts its own local Hadoop with isolated hosts (each NodeManager in a network
namespace of its own, joined to the gateway by a bridge; needs root), sized so that
every host holds one executor. For each size N, in a fresh driver process on the
gateway, it caches ``--rows`` x ``--columns`` random doubles in Spark, then runs

1. ``from_spark`` (until the Dataset is counted);
2. ``to_spark`` of that Dataset (until Spark has counted the rows);
3. the driver path there: ``df.toArrow()`` + ``ray.put``;
4. the driver path back: ``ray.get`` of every block + ``createDataFrame`` + count;

and counts, around each, the bytes on the bridge's own device and on every host's
veth. A Linux bridge's device counts only the frames the gateway itself receives or
sends, not those it forwards from one host to another, so it is exactly the gateway's
traffic with the hosts; what the hosts' veths carry beyond it went host to host.
Prints both as a share of the data moved (Arrow bytes: rows x columns x 8), the
wall time, and the rate.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenance import print_provenance


def counters(device: str) -> tuple[int, int]:
    """(received, sent) bytes of a network device in this namespace."""
    stats = Path("/sys/class/net") / device / "statistics"
    return (int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text()))


def traffic(bridge: str, veths: list[str], run: Callable[[], Any]) -> dict[str, float]:
    """Wall time of ``run()`` and the bytes the gateway and the hosts carried meanwhile.

    ``gateway``: into and out of the gateway (the bridge's device). ``host_to_host``: what
    the hosts sent that did not go to the gateway (the root-side veths receive what their
    host sends)."""
    devices = [bridge, *veths]
    before = {device: counters(device) for device in devices}
    started = time.monotonic()
    run()
    wall = time.monotonic() - started
    after = {device: counters(device) for device in devices}
    moved = {device: (after[device][0] - before[device][0], after[device][1] - before[device][1])
             for device in devices}
    hosts_sent = sum(moved[veth][0] for veth in veths)
    return {"wall_s": wall, "gateway": sum(moved[bridge]),
            "host_to_host": max(0, hosts_sent - moved[bridge][0])}


def one_size(conf: str, hosts: int, rows: int, columns: int, bridge: str,
             veths: list[str]) -> dict[str, dict[str, float]]:
    """Every phase on ``hosts`` executors, in this (fresh) driver process."""
    import pyarrow as pa
    import ray
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from zoo_ray import RayContext, data, init_spark_on_yarn

    sc = init_spark_on_yarn(hadoop_conf=conf, num_executors=hosts, executor_cores=1,
                            executor_memory="1g", driver_memory="1g",
                            extra_executor_memory_for_ray="1g")
    ctx = RayContext(sc, object_store_memory="512m")
    ctx.init()
    try:
        spark = SparkSession(sc)
        df = spark.range(0, rows, numPartitions=4 * hosts).select(
            *[F.rand(seed=i).alias(f"c{i}") for i in range(columns)]).cache()
        df.count()
        data.to_spark(data.from_spark(df.limit(1000))).count()  # warm up workers, imports
        held: dict[str, Any] = {}

        def convert() -> None:
            held["ds"] = data.from_spark(df)
            held["ds"].count()

        def driver_path() -> None:
            held["put"] = ray.put(df.toArrow())

        phases = {
            "from_spark": convert,
            "to_spark": lambda: data.to_spark(held["ds"]).count(),
            "driver path (toArrow + ray.put)": driver_path,
            "driver path back (ray.get + createDataFrame)": lambda: spark.createDataFrame(
                pa.concat_tables(ray.get(held["ds"].to_arrow_refs()))).count(),
        }
        return {name: traffic(bridge, veths, run) for name, run in phases.items()}
    finally:
        ctx.stop()
        sc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--one", nargs=3, metavar=("CONF", "BRIDGE", "VETHS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        conf, bridge, veths = args.one
        result = one_size(conf, args.hosts[0], args.rows, args.columns, bridge,
                          veths.split(","))
        print(json.dumps(result), flush=True)
        return

    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    print_provenance()
    megabytes = args.rows * args.columns * 8 / 1e6
    print(f"data: {args.rows} rows x {args.columns} doubles = {megabytes:.0f} MB")
    # An executor's container (2.5 GB) and the ApplicationMaster's fit a host; two
    # executors do not: every executor gets a host of its own.
    spec = MiniClusterSpec(nodemanagers=max(args.hosts), nm_memory_mb=4096, nm_vcores=4,
                           isolated_hosts=True)
    with tempfile.TemporaryDirectory(prefix="zoo-ray-gateway-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            network = cluster.network
            veths = ",".join(host.veth for host in network.hosts)
            print(f"bridge {network.bridge} ({network.gateway_ip}); hosts "
                  + ", ".join(f"{h.hostname}={h.ip} ({h.veth})" for h in network.hosts),
                  flush=True)
            for size in args.hosts:
                done = subprocess.run(
                    [sys.executable, __file__, "--hosts", str(size), "--rows", str(args.rows),
                     "--columns", str(args.columns), "--one",
                     str(cluster.hadoop_conf_dir), network.bridge, veths],
                    capture_output=True, text=True, timeout=1800,
                    env={**os.environ, "HADOOP_CONF_DIR": str(cluster.hadoop_conf_dir)})
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-4000:])
                line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
                print(f"{size} hosts: {4 * size} partitions", flush=True)
                for name, figures in json.loads(line).items():
                    print(f"{size} hosts  {name:45s} {figures['wall_s']:6.2f} s "
                          f"{megabytes / figures['wall_s']:7.1f} MB/s  gateway "
                          f"{figures['gateway'] / 1e6:8.2f} MB "
                          f"({100 * figures['gateway'] / (megabytes * 1e6):6.2f} % of the data)"
                          f"  host to host {figures['host_to_host'] / 1e6:8.2f} MB "
                          f"({100 * figures['host_to_host'] / (megabytes * 1e6):6.2f} %)",
                          flush=True)


if __name__ == "__main__":
    main()
