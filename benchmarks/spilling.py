"""A Dataset five times the cluster's object store: converted, consumed, nothing killed.

    python benchmarks/spilling.py [--times 5] [--columns 10] [--object-store 128m]

Starts its own local Hadoop with YARN's memory enforcement on (a container whose
processes use more than it holds is killed, as on production clusters), 2 executors
and a RayContext whose object stores together hold S bytes, then, for data of
``--times`` x S (random doubles made in the executors, not cached):

1. ``from_spark`` until every block is in Ray (most of them spilled to the nodes'
   disks as they arrive);
2. the Dataset consumed: ``map_batches`` over every block (spilled ones restored),
   the rows summed;
3. the floor: Spark's own in-executor Arrow pass over the same DataFrame
   (``mapInArrow`` counting rows).

Prints the rates, the ratio to the floor, what Ray spilled and restored, and every
executor the driver lost (none should be killed for memory).
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provenance import print_provenance


def count_batches(batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa

    rows = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"rows": [rows]})


def rows_of(batch: Any) -> dict[str, list[int]]:
    return {"rows": [batch.num_rows]}


def spill_summary() -> str:
    """Ray's own line on what it spilled and restored, cluster-wide."""
    from ray._private.internal_api import memory_summary

    summary = memory_summary(stats_only=True)
    return "; ".join(line.strip() for line in summary.splitlines()
                     if re.search(r"Spilled|Restored", line)) or "nothing spilled"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=float, default=5.0)
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--object-store", default="128m")
    args = parser.parse_args()

    import ray
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from zoo_ray import RayContext, data, init_spark_on_yarn
    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    print_provenance()
    with tempfile.TemporaryDirectory(prefix="zoo-ray-spill-") as tmp:
        spec = MiniClusterSpec(enforce_memory=True)
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            sc = init_spark_on_yarn(
                hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=2, executor_cores=1,
                executor_memory="1g", driver_memory="1g", extra_executor_memory_for_ray="2g")
            ctx = RayContext(sc, object_store_memory=args.object_store)
            ctx.init()
            ray.init()  # joins the RayContext's cluster
            try:
                store = int(ray.cluster_resources()["object_store_memory"])
                rows = int(args.times * store / (8 * args.columns))
                megabytes = rows * args.columns * 8 / 1e6
                partitions = max(4, round(megabytes / 32))
                spark = SparkSession(sc)
                df = spark.range(0, rows, numPartitions=partitions).select(
                    *[F.rand(seed=i).alias(f"c{i}") for i in range(args.columns)])
                print(f"object stores: {store / 1e6:.0f} MB over {len(ray.nodes())} nodes; "
                      f"data: {rows} rows x {args.columns} doubles = {megabytes:.0f} MB "
                      f"({megabytes * 1e6 / store:.1f}x), {partitions} partitions", flush=True)

                started = time.monotonic()
                ds = data.from_spark(df)
                converted = time.monotonic() - started
                print(f"converted: {spill_summary()}", flush=True)
                counted = ds.map_batches(rows_of, batch_format="pyarrow").sum("rows")
                consumed = time.monotonic() - started - converted
                print(f"consumed: {spill_summary()}", flush=True)
                if counted != rows:
                    raise RuntimeError(f"consumed {counted} rows of {rows}")
                del ds

                started = time.monotonic()
                df.mapInArrow(count_batches, "rows long").collect()
                floor = time.monotonic() - started

                both = converted + consumed
                print(f"from_spark            {converted:6.1f} s {megabytes / converted:7.1f} MB/s")
                print(f"consumed (map_batches) {consumed:6.1f} s {megabytes / consumed:7.1f} MB/s")
                print(f"converted + consumed  {both:6.1f} s {megabytes / both:7.1f} MB/s")
                print(f"floor (mapInArrow)    {floor:6.1f} s {megabytes / floor:7.1f} MB/s")
                print(f"from_spark / floor = {floor / converted:.2f}x; "
                      f"converted and consumed / floor = {floor / both:.2f}x")
                losses = ctx.lost_executors()
                print(f"executors lost: {len(losses)}; killed for memory: "
                      f"{sum(loss.killed_for_memory for loss in losses)}")
                for loss in losses:
                    print(f"  {loss.executor_id}: {loss.reason[:300]}")
            finally:
                ctx.stop()
                sc.stop()


if __name__ == "__main__":
    main()
