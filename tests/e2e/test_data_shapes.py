"""zoo_ray.data in the shapes the peers' users move data in (RayDP, Ray's RayDP tests, BigDL's
XShards, Zoo's RayRdd): on the session's shared application (``spark``, ``sc``, ``ray_ctx``),
which they leave whole."""
from __future__ import annotations

import datetime as dt
import gc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tests.e2e.helpers import wait_until
from tests.e2e.scenarios import with_localities

from zoo_ray.errors import BlocksLostError, InvalidArgumentError

ray = pytest.importorskip("ray")
data = pytest.importorskip("zoo_ray.data")


def _frame(spark, rows=200):
    return spark.createDataFrame(
        [(i, i % 7, i * 0.5, float(i) / 3, f"s{i}", i % 2 == 0,
          dt.date(2026, 1, 1) + dt.timedelta(days=i)) for i in range(rows)],
        "id long, small int, x double, f float, s string, b boolean, d date").repartition(4)


def test_to_pandas_has_the_dtypes_of_spark_s_to_pandas_and_an_empty_frame_its_columns(
        spark, ray_ctx):
    df = _frame(spark)
    ours = data.from_spark(df).to_pandas().sort_values("id", ignore_index=True)
    spark_s = df.toPandas().sort_values("id", ignore_index=True)
    print(dict(ours.dtypes.astype(str)))
    pd.testing.assert_frame_equal(ours, spark_s)
    empty = df.limit(0)
    ours_empty, spark_empty = data.from_spark(empty).to_pandas(), empty.toPandas()
    assert list(ours_empty.columns) == list(spark_empty.columns)
    assert list(ours_empty.dtypes) == list(spark_empty.dtypes) and len(ours_empty) == 0


def test_parallelism_sets_how_many_partitions_become_blocks(spark, ray_ctx):
    df = spark.range(0, 10_000, numPartitions=4)
    fewer, more = data.from_spark(df, parallelism=2), data.from_spark(df, parallelism=6)
    assert (fewer.num_blocks(), more.num_blocks()) == (2, 6)
    assert fewer.sum("id") == more.sum("id") == 10_000 * 9_999 // 2
    for wrong in (0, -1, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="parallelism"):
            data.from_spark(df, parallelism=wrong)


def test_release_lets_the_blocks_go_now_and_reading_after_it_says_so(spark, ray_ctx):
    gc.collect()
    baseline = sum(ray_ctx.object_store_usage().values())
    ds = data.from_spark(spark.range(0, 2_000_000, numPartitions=4))
    held = sum(ray_ctx.object_store_usage().values())
    assert held - baseline >= 15_000_000, "16 MB of ids in the object stores"
    ds.release()
    ds.release()  # idempotent
    assert ds.released
    wait_until(lambda: sum(ray_ctx.object_store_usage().values()) < baseline + 1_000_000, 60,
               "the object stores back at their baseline, with the Dataset still referenced")
    with pytest.raises(BlocksLostError, match=r"release\(\)"):
        ds.take(1)
    # A worker that gets the Dataset knows too.
    assert ray.get(ray.remote(num_cpus=0)(lambda dataset: dataset.released).remote(ds))


def _item(i):
    """Ints, strings, numpy arrays and dicts of arrays, in turn."""
    return (i, f"s{i}", np.full(3, i), {"a": np.arange(i % 5), "b": np.array([str(i)])})[i % 4]


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


def test_an_rdd_goes_to_ray_and_back_in_order_read_in_the_executors_holding_it(sc, ray_ctx):
    parts = data.from_rdd(sc.parallelize(range(1_000), 6).map(_item))
    rdd, levels = with_localities(sc, "zoo-ray-to-rdd-locality", lambda: data.to_rdd(parts))
    print(f"{len(parts)} partitions read back by tasks at {sorted(set(levels))}")
    assert set(levels) == {"PROCESS_LOCAL"}
    parts.release()
    gc.collect()
    with pytest.raises(InvalidArgumentError, match="released"):
        data.to_rdd(parts)
    partitions = rdd.glom().collect()  # read from Spark's checkpoint: Ray's copies are gone
    expected = [list(range(1_000))[k * 1_000 // 6:(k + 1) * 1_000 // 6] for k in range(6)]
    assert [len(p) for p in partitions] == [len(e) for e in expected]
    assert all(_same(item, _item(i)) for p, e in zip(partitions, expected)
               for item, i in zip(p, e))
    # Refs of the program's own: each a list of items.
    assert data.to_rdd([ray.put([1, 2]), ray.put(["x"])]).glom().collect() == [[1, 2], ["x"]]
    with pytest.raises(InvalidArgumentError, match="not a list of items"):
        data.to_rdd([ray.put({"a": 1})])
    with pytest.raises(InvalidArgumentError, match="ObjectRefs"):
        data.to_rdd([[1, 2]])


def test_an_rdd_of_batches_is_a_dataset_with_blocks_on_their_executors(sc, ray_ctx):
    def batches(k):  # 160 KB each: blocks Ray keeps in the object stores, not inline
        ids = np.arange(k * 10_000, (k + 1) * 10_000)
        kind = k % 4
        if kind == 0:
            return pd.DataFrame({"id": ids, "x": ids * 0.5})
        if kind == 1:
            return {"id": ids, "x": ids * 0.5}
        return pa.table({"id": ids, "x": ids * 0.5})

    ds = data.from_rdd_batches(sc.parallelize(range(8), 8).map(batches))
    assert ds.count() == 80_000 and ds.sum("id") == 80_000 * 79_999 // 2
    assert ds.schema().names == ["id", "x"]
    assert "" not in data.block_executors(ds), "every block on an executor's node"
    back = data.to_spark(ds.map_batches(lambda frame: frame.assign(y=frame["x"] * 2),
                                        batch_format="pandas"))
    assert back.selectExpr("sum(y)").first()[0] == sum(range(80_000))
    arrays = data.from_rdd_batches(sc.parallelize(range(4), 2).map(lambda k: np.full(5, k)))
    assert sorted(arrays.to_pandas()["data"]) == sorted([k for k in range(4) for _ in range(5)])
    with pytest.raises(InvalidArgumentError, match="same columns and types"):
        data.from_rdd_batches(sc.parallelize(range(2), 1).map(
            lambda k: {"id": np.arange(3)} if k else {"id": np.array(["a"])}))
    with pytest.raises(InvalidArgumentError, match="an item is a str"):
        data.from_rdd_batches(sc.parallelize(["no batch"], 1))
