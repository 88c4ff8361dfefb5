"""The cost of recovery: one lost executor's blocks computed again, against a fresh from_spark.

    python benchmarks/recovery.py [--rows 4000000] [--columns 4] [--executors 3]

Starts its own local Hadoop (two NodeManagers), an application of ``--executors``
executors and a RayContext, caches ``--rows`` x ``--columns`` random doubles in Spark
(12 partitions), and converts them with ``from_spark``. Then YARN kills one executor
that is not the head's; once its node is gone, the driver reads the blocks that were on
it, which Ray and Spark bring back (:mod:`zoo_ray.block_recovery`): timed from the
``ray.get`` to the last block. Against it: a fresh ``from_spark`` of the same rows (the
same partitions of the cached DataFrame, chosen with ``spark_partition_id``), and the
full conversion. Spark computes the lost partitions from its lineage, since the cache
of the lost executor went with it; a fresh conversion of the same rows reads them from
the cache where it survives, so it also counts what Spark's recomputation costs.

Prints every figure and the ratios, with the commit and the machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import print_provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--executors", type=int, default=3)
    args = parser.parse_args()

    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    print_provenance()
    spec = MiniClusterSpec(nodemanagers=2, nm_memory_mb=10240, nm_vcores=8)
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir),
                                    num_executors=args.executors, executor_cores=2,
                                    executor_memory="1g", driver_memory="1g",
                                    extra_executor_memory_for_ray="2g", executor_timeout=900)
            ctx = RayContext(sc, object_store_memory="1g")
            ctx.init()
            try:
                run(sc, ctx, cluster, args)
            finally:
                ctx.stop()
                sc.stop()


def run(sc: Any, ctx: Any, cluster: Any, args: argparse.Namespace) -> None:
    import ray
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from zoo_ray import data
    from zoo_ray.host import wait_until
    from zoo_ray.ray_blocks import dataset_blocks, object_nodes

    spark = SparkSession(sc)
    df = spark.range(0, args.rows, numPartitions=12).select(
        F.spark_partition_id().alias("partition"),
        *[F.rand(seed=i).alias(f"c{i}") for i in range(args.columns)]).cache()
    df.count()
    data.from_spark(df.limit(1000)).count()  # warm up workers and imports
    megabytes = args.rows * (args.columns + 1) * 8 / 1e6
    print(f"data: {args.rows} rows x {args.columns + 1} columns = {megabytes:.0f} MB, "
          f"{args.executors} executors, 12 partitions")

    started = time.monotonic()
    ds = data.from_spark(df)
    full = time.monotonic() - started
    nodes = ctx.executor_nodes()
    head = ctx.nodes[0]["container"]
    blocks = list(dataset_blocks(ds))
    assert len(blocks) == 12, "a block per partition (each under from_spark's 64m)"
    held = object_nodes([block.ref for block in blocks])
    victim_node = next(node for node in held if node in nodes
                       and nodes[node].container != head)
    victim = nodes[victim_node].container
    # Not read before the loss: a copy elsewhere would spare Ray the reconstruction.
    partitions = [i for i, node in enumerate(held) if node == victim_node]
    lost = [blocks[i].ref for i in partitions]
    lost_rows = sum(blocks[i].num_rows for i in partitions)
    print(f"from_spark of everything: {full:.2f}s; executor {victim} holds partitions "
          f"{partitions}, {lost_rows} rows")

    cluster.resource_manager.signal_container(victim, "FORCEFUL_SHUTDOWN")
    wait_until(lambda: victim_node not in ctx.executor_nodes(), 120, interval=0.5)
    started = time.monotonic()
    recovered = ray.get(lost, timeout=600)
    recovery = time.monotonic() - started
    assert sum(len(table) for table in recovered) == lost_rows
    print(f"recovery of the lost blocks (Ray re-runs the load, Spark computes the "
          f"partitions from lineage): {recovery:.2f}s")

    started = time.monotonic()
    again = data.from_spark(df.where(F.col("partition").isin(partitions)))
    again.count()
    fresh = time.monotonic() - started
    print(f"a fresh from_spark of the same rows: {fresh:.2f}s")
    print(f"recovery / fresh conversion of the same rows = {recovery / fresh:.2f}x")
    print(f"recovery / full conversion = {recovery / full:.2f}x "
          f"(the lost share of the rows: {lost_rows / args.rows:.2f})")


if __name__ == "__main__":
    main()
