"""The data path: from_spark / to_spark against the driver path and Spark's own Arrow pass.

    python benchmarks/data_path.py [--rows 5000000] [--columns 10] [--executors 2]

Starts its own local Hadoop, a SparkContext with ``--executors`` executors and a
RayContext, caches ``--rows`` x ``--columns`` random doubles in Spark, then
measures in one run (best of ``--repeat``):

1. ``from_spark``: until every block is in Ray and counted (recoverable, the default,
   and with ``recoverable=False``), and its two phases as its log line gives them
   (Spark's job, which computes and spools the partitions, and the load);
2. the driver path there: ``df.toArrow()`` + ``ray.put``;
3. the floor: Spark's own in-executor Arrow pass (``mapInArrow`` counting rows);
4. ``to_spark`` (until Spark has counted the rows) against the driver path back:
   ``ray.get`` of every block to the driver + ``createDataFrame`` + count;
5. the floor back: Spark turning as many Arrow batches, made in its own Python
   workers, into a checkpointed DataFrame (what ``to_spark`` returns) and counting
   it;

and the peak RSS growth of the driver (Python process and its JVM) during 1 and
4, beside the JVM's live heap (after a full GC) before and after, and the same RSS
growth during the floors, which are Spark jobs without zoo_ray: what a JVM grows by
for any job of that size. Prints every figure and the ratios the issue sets goals for.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from provenance import print_provenance


class PeakRss:
    """Peak RSS growth of some processes, sampled every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.base = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
        self.peak = dict(self.base)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], psutil.Process(pid).memory_info().rss)

    def stop(self) -> dict[int, int]:
        self._done.set()
        self._thread.join()
        return {pid: self.peak[pid] - self.base[pid] for pid in self.pids}


class Phases(logging.Handler):
    """The two phases of every ``from_spark`` (from its log record's arguments): Spark's
    job, which computes and spools the partitions, and the load into the object stores."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[float, float]] = []
        logging.getLogger("zoo_ray.spark_to_ray").addHandler(self)
        logging.getLogger("zoo_ray.spark_to_ray").setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("from_spark:"):
            job, load = record.args[-2:]  # type: ignore[index]
            self.seen.append((job, load))


def live_heap(sc: Any) -> int:
    """Bytes of the driver JVM's heap still in use after a full GC."""
    memory = sc._jvm.java.lang.management.ManagementFactory.getMemoryMXBean()
    memory.gc()
    return int(memory.getHeapMemoryUsage().getUsed())


def watched(pids: list[int], sc: Any, run: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """``run()``'s result, and the growth (MB) of the driver's peak RSS (Python, JVM) and of
    its JVM's live heap meanwhile."""
    heap = live_heap(sc)
    watch = PeakRss(pids)
    result = run()
    rss = watch.stop()
    return result, {"python": rss[pids[0]] / 1e6, "jvm": rss[pids[1]] / 1e6,
                    "live heap": (live_heap(sc) - heap) / 1e6}


def best(repeat: int, run: Callable[[], Any]) -> float:
    """The shortest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.monotonic()
        run()
        times.append(time.monotonic() - started)
    return min(times)


def count_batches(batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa

    rows = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"rows": [rows]})


def make_batches(rows: int, columns: int, _: Iterator[Any]) -> Iterator[Any]:
    """``rows`` rows of ``columns`` doubles in Arrow batches as Spark cuts them (10,000
    rows), made in the Python worker without reading anything."""
    import numpy as np
    import pyarrow as pa

    values = pa.array(np.ones(10_000))
    names = [f"c{i}" for i in range(columns)]
    for start in range(0, rows, 10_000):
        piece = values.slice(0, min(10_000, rows - start))
        yield pa.RecordBatch.from_arrays([piece] * columns, names=names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--executors", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.minicluster import MiniCluster

    print_provenance()
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop") as cluster:
            sc = init_spark_on_yarn(
                hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=args.executors,
                executor_cores=1, executor_memory="1g", driver_memory="2g",
                extra_executor_memory_for_ray="2g")
            ctx = RayContext(sc, object_store_memory="1g")
            ctx.init()
            try:
                run(sc, args)
            finally:
                ctx.stop()
                sc.stop()


def run(sc: Any, args: argparse.Namespace) -> None:
    import pyarrow as pa
    import ray
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from zoo_ray import data

    spark = SparkSession(sc)
    df = spark.range(0, args.rows, numPartitions=4 * args.executors).select(
        *[F.rand(seed=i).alias(f"c{i}") for i in range(args.columns)]).cache()
    df.count()
    megabytes = args.rows * args.columns * 8 / 1e6
    data.to_spark(data.from_spark(df.limit(1000))).count()  # warm up workers and imports
    pids = [os.getpid(), sc._gateway.proc.pid]
    print(f"data: {args.rows} rows x {args.columns} doubles = {megabytes:.0f} MB, "
          f"{args.executors} executors, best of {args.repeat}")

    growth = {}
    phases = Phases()
    ours, growth["from_spark"] = watched(
        pids, sc, lambda: best(args.repeat, lambda: data.from_spark(df).count()))
    job, load = min(phases.seen)
    unrecoverable = best(args.repeat,
                         lambda: data.from_spark(df, recoverable=False).count())
    driver = best(args.repeat, lambda: ray.put(df.toArrow()))
    floor, growth["floor"] = watched(pids, sc, lambda: best(
        args.repeat, lambda: df.mapInArrow(count_batches, "rows long").collect()))

    ds = data.from_spark(df)
    back, growth["to_spark"] = watched(
        pids, sc, lambda: best(args.repeat, lambda: data.to_spark(ds).count()))
    partitions = 4 * args.executors
    made = spark.range(0, partitions, numPartitions=partitions).mapInArrow(
        partial(make_batches, args.rows // partitions, args.columns),
        ", ".join(f"c{i} double" for i in range(args.columns)))
    floor_back, growth["floor back"] = watched(pids, sc, lambda: best(
        args.repeat, lambda: made.localCheckpoint(eager=True).count()))
    refs = ds.to_arrow_refs()
    back_driver = best(args.repeat, lambda: spark.createDataFrame(
        pa.concat_tables(ray.get(refs))).count())

    rate = {name: megabytes / seconds for name, seconds in [
        ("from_spark", ours), ("driver path (toArrow + ray.put)", driver),
        ("floor (mapInArrow count)", floor), ("to_spark", back),
        ("driver path back (ray.get + createDataFrame)", back_driver),
        ("floor back (Arrow from Python, checkpointed)", floor_back)]}
    for name, mbps in rate.items():
        print(f"{name:48s} {mbps:8.1f} MB/s")
    print(f"from_spark's fastest run: Spark's job (compute and spool) {job:.2f} s, "
          f"loading {load:.2f} s; the floor {floor:.2f} s")
    print(f"from_spark recoverable / recoverable=False = {ours / unrecoverable:.2f}x "
          "(the time recoverability adds)")
    print(f"from_spark / driver path      = {driver / ours:.2f}x (goal >= 3)")
    print(f"from_spark / in-executor floor = {floor / ours:.2f}x (goal >= 0.5)")
    print(f"to_spark / driver path back   = {back_driver / back:.2f}x (goal >= 3)")
    print(f"to_spark / floor back          = {floor_back / back:.2f}x")
    print(f"ceilings on this machine: floor / driver path = {driver / floor:.2f}x, "
          f"floor back / driver path back = {back_driver / floor_back:.2f}x")
    for label, mb in growth.items():
        print(f"driver growth during {label:10s}: peak RSS python {mb['python']:.1f} MB "
              f"({100 * mb['python'] / megabytes:.1f}% of the data), JVM {mb['jvm']:.1f} MB "
              f"({100 * mb['jvm'] / megabytes:.1f}%); JVM live heap after GC "
              f"{mb['live heap']:+.1f} MB")


if __name__ == "__main__":
    main()
