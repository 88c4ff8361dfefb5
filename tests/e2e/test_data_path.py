"""zoo_ray.data on the local Hadoop: Spark partitions into Ray on their own nodes, and back.

On the session's shared application (``spark``, ``sc``, ``ray_ctx``). The bodies that
``test_isolated_hosts`` runs again on isolated hosts are in :mod:`tests.e2e.scenarios`.
"""
from __future__ import annotations

import datetime as dt
import gc
import os
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tests.e2e import scenarios
from tests.e2e.helpers import wait_until

from zoo_ray import RayContext
from zoo_ray.errors import BlocksLostError, RayContextError, UnsupportedColumnError
from zoo_ray.ray_blocks import dataset_blocks, object_nodes

ray = pytest.importorskip("ray")
data = pytest.importorskip("zoo_ray.data")

def _typed_df(spark, partitions=8):
    """Every type the issue lists, nulls in every column, and partitions left empty."""
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("id", T.LongType()), T.StructField("x", T.DoubleType()),
        T.StructField("s", T.StringType()), T.StructField("d20", T.DecimalType(20, 4)),
        T.StructField("d38", T.DecimalType(38, 10)), T.StructField("ts", T.TimestampType()),
        T.StructField("ntz", T.TimestampNTZType()), T.StructField("day", T.DateType()),
        T.StructField("bin", T.BinaryType()), T.StructField("arr", T.ArrayType(T.IntegerType())),
        T.StructField("m", T.MapType(T.StringType(), T.LongType())),
        T.StructField("st", T.StructType([
            T.StructField("a", T.IntegerType()),
            T.StructField("b", T.StructType([T.StructField("c", T.StringType())]))])),
    ])
    utc = dt.timezone.utc
    rows = [(i, i / 3, f"zoë-日本-{i}", Decimal(f"{i}.1234"),
             Decimal(f"1234567890123456789{i}.0123456789"),
             dt.datetime(2026, 1, 1, 12, i, tzinfo=utc), dt.datetime(2026, 5, 1, 0, 0, i),
             dt.date(2020, 1, 1 + i), bytes([i, 255, 0]), [i, None, -i], {"k": i, "n": None},
             (i, (f"ç{i}",))) for i in range(5)]
    rows.append(tuple([5] + [None] * (len(schema.fields) - 1)))
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), schema)


def _ray_table(ds) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs())).sort_by("id")


def test_from_spark_without_a_running_ray_context_says_what_to_start(no_ray_context, spark):
    with pytest.raises(RayContextError, match="RayContext\\(sc\\).init\\(\\)"):
        data.from_spark(spark.range(3))


def test_values_and_types_are_equal_in_spark_and_ray(spark, ray_ctx):
    df = _typed_df(spark)
    ds = data.from_spark(df)
    expected = df.toArrow().sort_by("id")
    actual = _ray_table(ds)
    assert ds.count() == df.count() == 6
    # Timestamps carry the session's time zone, which Spark may spell Etc/UTC or UTC.
    assert actual.schema.field("ts").type.tz in ("UTC", "Etc/UTC")
    same_zone = actual.schema.set(5, expected.schema.field("ts"))
    assert same_zone.equals(expected.schema), (actual.schema, expected.schema)
    assert actual.cast(same_zone).equals(expected)


def test_a_dataframe_with_zero_rows_is_an_empty_dataset_with_its_columns(spark, ray_ctx):
    df = _typed_df(spark).where("id < 0")
    ds = data.from_spark(df)
    assert ds.count() == 0
    assert ds.schema().names == df.columns


def test_each_block_lives_on_the_ray_node_of_the_executor_that_computed_it(spark, ray_ctx):
    scenarios.each_block_lives_on_the_ray_node_of_the_executor_that_computed_it(spark, ray_ctx)


def test_a_retried_spark_task_leaves_no_duplicate_or_orphaned_block(spark, ray_ctx):
    from pyspark import TaskContext
    from pyspark.sql import functions as F

    def fail_first_attempt_midway(i):
        ctx = TaskContext.get()
        if ctx.partitionId() == 1 and ctx.attemptNumber() == 0 and i % 25_000 == 24_000:
            raise RuntimeError("injected failure after some batches were spooled")
        return i

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1000")
    try:
        df = spark.range(0, 100_000, numPartitions=4).select(
            F.udf(fail_first_attempt_midway, "long")("id").alias("id"))
        ds = data.from_spark(df, block_size="64k")
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    ids = _ray_table(ds).column("id").to_pylist()
    assert ids == list(range(100_000))
    assert _spool_files(ray_ctx) == []


def _spool_files(ctx: RayContext) -> list[Path]:
    return [p for node in ctx.executor_nodes().values()
            for p in (Path(node.work_dir) / ".zoo_ray" / "spool").rglob("*") if p.is_file()]


def test_round_trip_through_map_batches_keeps_types(spark, ray_ctx):
    import pyarrow.compute as pc

    df = _typed_df(spark)
    ds = data.from_spark(df).map_batches(
        lambda batch: batch.append_column("parity", pc.bit_wise_and(batch["id"], 1)),
        batch_format="pyarrow")
    back = data.to_spark(ds)
    assert [f.dataType for f in back.schema.fields][:-1] == [f.dataType for f in df.schema.fields]
    assert back.schema["parity"].dataType.simpleString() == "bigint"
    expected = df.withColumn("parity", df["id"] % 2).toArrow().sort_by("id")
    assert back.toArrow().sort_by("id").equals(expected)
    assert _spool_files(ray_ctx) == []


def test_pandas_batches_are_numpy_backed_as_in_spark(spark, ray_ctx):
    df = spark.range(0, 1000, numPartitions=3).selectExpr("id", "id * 0.5 AS half")
    ds = data.from_spark(df).map_batches(
        lambda batch: batch.assign(parity=batch["id"] % 2), batch_format="pandas")
    back = data.to_spark(ds)
    assert back.schema["parity"].dataType.simpleString() == "bigint"
    expected = df.withColumn("parity", df["id"] % 2).toArrow().sort_by("id")
    assert back.toArrow().sort_by("id").to_pydict() == expected.to_pydict()


def _ids(df) -> list[int]:
    return [row.id for row in df.select("id").collect()]


def test_rows_keep_their_order_both_ways_and_a_sliced_dataset_goes_back_as_sliced(
        spark, ray_ctx):
    rows = 50_000
    df = spark.range(0, rows, numPartitions=6).selectExpr("id", "id * 2 AS twice")
    # Batches of 1,000 rows, files of two batches (cut between Spark's batches), so blocks
    # of 2,000 rows: the slices below end and start inside blocks.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1000")
    try:
        ds = data.from_spark(df, block_size="16k")
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(list(dataset_blocks(ds))) > 12
    assert pa.concat_tables(ray.get(ds.to_arrow_refs())).column("id").to_pylist() == list(
        range(rows))
    assert _ids(data.to_spark(ds)) == list(range(rows))
    assert _ids(data.to_spark(ds.limit(12_345))) == list(range(12_345))
    head, tail = ds.split_at_indices([30_001])
    assert _ids(data.to_spark(tail)) == list(range(30_001, rows))
    back = data.to_spark(head)
    assert _ids(back) == list(range(30_001))
    assert back.where("twice != id * 2").count() == 0


def test_to_spark_reads_each_block_in_the_executor_holding_it(spark, sc, ray_ctx):
    scenarios.to_spark_reads_each_block_in_the_executor_holding_it(spark, sc, ray_ctx)


def test_a_spark_task_fetches_a_block_through_ray_when_its_file_is_not_on_its_host(sc, ray_ctx):
    scenarios.a_spark_task_fetches_a_block_through_ray_when_its_file_is_not_on_its_host(
        sc, ray_ctx)


def test_conversions_work_while_other_spark_jobs_hold_executor_slots(spark, sc, ray_ctx,
                                                                    tmp_path):
    # The executors share this host's file system: the busy tasks say when they hold their
    # slots and hold them until the conversions are done (at most 120 s).
    done = tmp_path / "done"

    def busy(index, _):
        (tmp_path / f"busy-{index}").touch()
        for _ in range(1200):
            if done.exists():
                break
            time.sleep(0.1)
        return [1]

    other = threading.Thread(target=lambda: sc.parallelize(range(2), 2)
                             .mapPartitionsWithIndex(busy).collect())
    other.start()
    try:
        wait_until(lambda: len(list(tmp_path.glob("busy-*"))) == 2, 60,
                   "two Spark tasks holding executor slots")
        df = spark.range(0, 300_000, numPartitions=6).selectExpr("id", "id % 7 AS k")
        back = data.to_spark(data.from_spark(df))
        assert back.count() == 300_000
        assert back.groupBy().sum("k").first()[0] == df.groupBy().sum("k").first()[0]
        assert other.is_alive(), "the slots were held throughout"
    finally:
        done.touch()
        other.join()


def test_to_spark_of_a_dataset_spread_over_nodes_and_one_made_on_the_driver(spark, ray_ctx):
    made_on_driver = ray.data.from_items([{"a": i, "b": str(i)} for i in range(50)])
    df = data.to_spark(made_on_driver)
    assert sorted(r.a for r in df.collect()) == list(range(50))
    empty = data.to_spark(ray.data.from_items([{"a": 1}]).filter(lambda r: r["a"] > 1))
    assert empty.count() == 0 and empty.columns == ["a"]


def test_unusable_columns_are_typed_errors_naming_the_column(spark, ray_ctx):
    interval = spark.sql("SELECT 1 AS id, make_interval(1, 2, 0, 3, 0, 0, 0) AS span")
    with pytest.raises(UnsupportedColumnError, match="'span'.*interval"):
        data.from_spark(interval)
    unsigned = ray.data.from_arrow(pa.table({"n": pa.array([1, 2], pa.uint64())}))
    with pytest.raises(UnsupportedColumnError, match="'n'.*uint64"):
        data.to_spark(unsigned)


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


class _PeakRss:
    """The largest RSS of some processes, sampled every 20 ms while in the block."""

    def __init__(self, pids):
        self.pids, self.peak, self._done = pids, dict.fromkeys(pids, 0), threading.Event()

    def __enter__(self):
        self.base = {pid: _rss(pid) for pid in self.pids}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.02):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], _rss(pid))

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def growth(self, pid: int) -> int:
        return max(self.peak[pid] - self.base[pid], 0)


def test_400mb_go_to_ray_and_back_without_passing_through_the_driver(spark, ray_ctx, sc):
    from pyspark.sql import functions as F

    df = spark.range(0, 5_000_000, numPartitions=8).select(
        *[F.rand(seed=i).alias(f"c{i}") for i in range(10)]).cache()
    assert df.count() == 5_000_000
    size = 5_000_000 * 10 * 8
    data.to_spark(data.from_spark(df.limit(1000)))  # warm up: imports, workers
    jvm = sc._gateway.proc.pid if getattr(sc._gateway, "proc", None) else None
    pids = [os.getpid()] + ([jvm] if jvm else [])
    with _PeakRss(pids) as there:
        ds = data.from_spark(df)
        assert ds.count() == 5_000_000
    with _PeakRss(pids) as back:
        total = data.to_spark(ds).agg(F.sum("c3")).first()[0]
    assert total == pytest.approx(df.agg(F.sum("c3")).first()[0], rel=1e-12)
    for pid, name in zip(pids, ["python driver", "driver JVM"]):
        print(f"{name}: peak RSS growth {there.growth(pid) / 2**20:.1f} MiB to Ray, "
              f"{back.growth(pid) / 2**20:.1f} MiB back, for {size / 2**20:.0f} MiB of data")
    assert there.growth(os.getpid()) < size / 10
    assert back.growth(os.getpid()) < size / 10
    df.unpersist()


def test_rdd_partitions_feed_actors_on_their_nodes_which_train_a_model(sc, ray_ctx):
    def shard(seed):
        rng = np.random.default_rng(seed)
        features = rng.normal(size=(500, 3))
        return features, features @ np.array([2.0, -1.0, 0.5]) + 0.3 + rng.normal(0, .01, 500)

    parts = data.from_rdd(sc.parallelize(range(6), 6).map(shard))
    assert len(parts) == 6 and None not in parts.node_ids and parts.counts == [1] * 6
    assert set(parts.node_ids) == set(ray_ctx.executor_nodes())

    @ray.remote(num_cpus=0)
    class Trainer:
        def load(self, refs):
            assert all(isinstance(r, ray.ObjectRef) for r in refs), "refs, not copies"
            self.shards = [item for items in ray.get(refs) for item in items]
            return len(self.shards)

        def gradient(self, w):
            grad, n = np.zeros(4), 0
            for features, target in self.shards:
                x = np.hstack([features, np.ones((len(target), 1))])
                grad += 2 * x.T @ (x @ w - target)
                n += len(target)
            return grad, n

    nodes = sorted(ray_ctx.executor_nodes())
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
    actors = [Trainer.options(scheduling_strategy=strategy(node, soft=False)).remote()
              for node in nodes + nodes[:1]]
    shares = data.assign_partitions_to_actors(parts, actors)
    # Balanced: every actor gets P // A or P // A + 1 of the P partitions.
    per_actor, left = divmod(len(parts), len(actors))
    assert sorted(len(s) for s in shares) == sorted(
        per_actor + (i < left) for i in range(len(actors)))
    assert sum(ray.get(data.feed(parts, actors, "load"))) == 6

    w = np.zeros(4)
    for _ in range(50):
        results = ray.get([a.gradient.remote(w) for a in actors])
        w = w - 0.05 * sum(g for g, _ in results) / sum(n for _, n in results)
    expected = np.zeros(4)
    shards = [shard(seed) for seed in range(6)]
    x = np.vstack([np.hstack([f, np.ones((len(t), 1))]) for f, t in shards])
    y = np.concatenate([t for _, t in shards])
    for _ in range(50):
        expected = expected - 0.05 * 2 * x.T @ (x @ expected - y) / len(y)
    np.testing.assert_allclose(w, expected, atol=1e-6)
    for actor in actors:
        ray.kill(actor)
    parts.release()
    parts.release()


def _settled_usage(ctx: RayContext) -> dict[str, int]:
    """Object store usage once earlier tests' objects are freed (three equal readings)."""
    gc.collect()
    readings = [ctx.object_store_usage()]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (len(readings) < 3 or readings[-3] != readings[-1]):
        time.sleep(1)
        readings.append(ctx.object_store_usage())
    return readings[-1]


def test_object_store_usage_returns_to_its_baseline_after_release(spark, sc, ray_ctx):
    baseline = _settled_usage(ray_ctx)
    ds = data.from_spark(spark.range(0, 1_000_000, numPartitions=4).selectExpr("id", "id * 2.0"))
    parts = data.from_rdd(sc.parallelize(range(100_000), 4).map(lambda i: np.full(8, i)))
    during = ray_ctx.object_store_usage()
    grown = sum(during.values()) - sum(baseline.values())
    print(f"object stores: baseline {baseline}, +{grown / 2**20:.1f} MiB while held")
    assert grown > 16_000_000
    del ds
    parts.release()
    gc.collect()
    wait_until(lambda: sum(ray_ctx.object_store_usage().values()) <= sum(baseline.values()), 60,
          "object stores back at their baseline")


@ray.remote(num_cpus=0)
class _BatchReader:
    """Reads a Dataset batch by batch, as a training loop would, and keeps the ids."""

    def __init__(self, ds):
        # A batch per block, no prefetching: a block is fetched when its batch is read.
        self.batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy",
                                            prefetch_batches=0))
        self.ids = []

    def get(self, refs):
        return ray.get(refs)

    def read(self, count=None):
        for batch in self.batches:
            self.ids.extend(batch["id"].tolist())
            if count is not None:
                count -= 1
                if not count:
                    break
        return self.ids


def _delete_on_hdfs(spark, path: str) -> None:
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(path)
    target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(target, True)


@pytest.mark.faults
def test_blocks_of_a_lost_executor_are_computed_again_by_spark_unless_it_cannot(
        spark, breakable_ray_ctx, cluster, caplog):
    ray_ctx = breakable_ray_ctx
    rows = 180_000  # 120 KB blocks: in the object stores (Ray keeps objects < 100 KB inline)
    source = spark.range(0, rows, numPartitions=12)
    recoverable = data.from_spark(source)
    fast = data.from_spark(source, recoverable=False)
    # A DataFrame whose input is gone when Spark would compute it again.
    path = f"recompute-{os.getpid()}-{time.time_ns()}"
    source.write.parquet(path)
    unreadable = data.from_spark(spark.read.parquet(path))
    _delete_on_hdfs(spark, path)
    arrays = data.from_rdd(spark.sparkContext.range(0, 12, numSlices=12).map(
        lambda i: np.full(20_000, i)))

    nodes = ray_ctx.executor_nodes()
    head = ray_ctx.nodes[0]["container"]
    reader_node = next(node for node in nodes if nodes[node].container == head)
    placed = {name: list(zip(refs, object_nodes(refs))) for name, refs in (
        (name, [block.ref for block in dataset_blocks(ds)])
        for name, ds in (("recoverable", recoverable), ("fast", fast),
                         ("unreadable", unreadable)))}
    # The victim holds blocks of each Dataset, one the reader has not read yet among them
    # (it reads the first block, below), and is not the head's executor (whose loss takes
    # the cluster: issue #12's fault).
    placed["arrays"] = list(zip(arrays.refs, arrays.node_ids))
    victim_node = next(
        (node for node in nodes if node != reader_node
         and node in [held for _, held in placed["recoverable"][1:]]
         and all(node in [held for _, held in placed[name]]
                 for name in ("fast", "unreadable", "arrays"))),
        None)
    assert victim_node is not None, f"no executor holds blocks of all four: {placed}"
    victim = nodes[victim_node].container
    lost = {name: [ref for ref, held in pairs if held == victim_node]
            for name, pairs in placed.items()}
    reader = _BatchReader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        reader_node, soft=False)).remote(recoverable)
    assert ray.get(reader.read.remote(1), timeout=120)

    caplog.set_level("WARNING", logger="zoo_ray.recompute_server")
    cluster.resource_manager.signal_container(victim, "FORCEFUL_SHUTDOWN")
    wait_until(lambda: victim_node not in ray_ctx.executor_nodes(), 120, "the node's loss")
    started = time.monotonic()
    ids = ray.get(reader.read.remote(), timeout=600)
    print(f"the reader finished {time.monotonic() - started:.1f}s after the loss")
    assert sorted(ids) == list(range(rows)), "every row exactly once"
    recomputed = [record.getMessage() for record in caplog.records
                  if "computed again by Spark" in record.getMessage()]
    print("\n".join(recomputed))
    assert any(victim in message for message in recomputed), \
        "the lost executor's blocks came back from Spark, not from a copy"
    # An RDD's partitions fed to an actor come back the same way.
    indices = [i for i, held in enumerate(arrays.node_ids) if held == victim_node]
    fed = ray.get(reader.get.remote([arrays.refs[i] for i in indices]), timeout=300)
    for i, items in zip(indices, fed):
        assert len(items) == 1 and np.array_equal(items[0], np.full(20_000, i))

    # Opted out: the fast failure, naming the executor.
    with pytest.raises(BlocksLostError, match=f"{victim}.*recoverable=False"):
        ray.get(lost["fast"], timeout=120)
    # Spark cannot compute them again (its input is gone): a typed error naming the
    # executor, with Spark's reason.
    with pytest.raises(BlocksLostError, match=f"{victim}.*Spark could not compute them again"):
        ray.get(lost["unreadable"], timeout=300)


def test_a_partition_larger_than_the_object_store_is_held_block_by_block_and_spilled(
        spark, no_ray_context):
    sc = no_ray_context
    small = RayContext(sc, object_store_memory="80m")
    small.init()
    try:
        # One partition of 96 MB: more than the 80 MB object store (Ray's least is 75 MB)
        # holds, so some of its 16 MB blocks are spilled.
        rows = 12_000_000
        ds = data.from_spark(spark.range(0, rows, numPartitions=1).selectExpr("id * 1.0 AS x"),
                             block_size="16m")
        spill = [p for node in small.executor_nodes().values()
                 for p in (Path(node.work_dir) / ".zoo_ray" / "spill").rglob("*") if p.is_file()]
        print(f"{len(spill)} spill files while the Dataset is held")
        assert spill, "Ray spilled blocks to the node's spill directory"
        assert ds.count() == rows
        assert ds.sum("x") == rows * (rows - 1) / 2
    finally:
        small.stop()
