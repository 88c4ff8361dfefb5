"""Unit tests of zoo_ray.data's pure parts (schemas, block homes, errors); e2e in tests/e2e."""
from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from zoo_ray import data
from zoo_ray.conversion import tasks_by_node
from zoo_ray.errors import InvalidArgumentError, RayContextError, UnsupportedColumnError
from zoo_ray.protocol import NodeInfo
from zoo_ray.ray_to_spark import _block_homes, _spark_schema_of
from zoo_ray.spark_to_ray import _arrow_schema_of


def _df(*fields: T.StructField) -> SimpleNamespace:
    return SimpleNamespace(schema=T.StructType(list(fields)))


def test_the_arrow_schema_spark_converts_to():
    schema = _arrow_schema_of(_df(T.StructField("id", T.LongType()),
                                  T.StructField("ts", T.TimestampType())))
    assert schema == pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))])


def test_a_column_arrow_cannot_carry_is_named():
    df = _df(T.StructField("id", T.LongType()), T.StructField("span", T.CalendarIntervalType()))
    with pytest.raises(UnsupportedColumnError, match="'span' has type interval"):
        _arrow_schema_of(df)


def test_a_column_spark_cannot_hold_is_named():
    assert _spark_schema_of(pa.schema([("a", pa.large_string())])).simpleString() == \
        "struct<a:string>"
    with pytest.raises(UnsupportedColumnError, match="'n' has Arrow type uint64"):
        _spark_schema_of(pa.schema([("a", pa.int64()), ("n", pa.uint64())]))


def _node(container: str) -> NodeInfo:
    return NodeInfo(role="worker", address=None, pid=1, node_ip="198.18.0.2", log_dir="l",
                    temp_dir="t", container=container)


def test_blocks_stay_on_their_executor_node_and_others_are_spread():
    executors = {"n1": _node("c1"), "n2": _node("c2")}
    homes = _block_homes(["n2", "gateway", None, "n1", "gateway"], executors)
    assert homes == ["n2", "n1", "n2", "n1", "n1"]


def test_no_live_executor_node_is_a_typed_error():
    with pytest.raises(RayContextError, match="restart the RayContext"):
        _block_homes(["n1"], {})


def test_conversions_without_a_running_ray_context_say_what_to_start():
    with pytest.raises(RayContextError, match="init_spark_on_yarn.*RayContext\\(sc\\).init"):
        data.from_rdd(object())


def test_released_partitions_hold_nothing_and_release_twice():
    parts = data.RayPartitions(refs=["r1"], node_ids=["n1"], containers=["c1"], counts=[3])
    parts.release()
    parts.release()
    assert len(parts) == 0 and parts.node_ids == []


def test_feeding_no_actors_is_a_typed_error():
    parts = data.RayPartitions(refs=[], node_ids=[], containers=[])
    with pytest.raises(InvalidArgumentError, match="at least one actor"):
        data.assign_partitions_to_actors(parts, [])


def test_load_tasks_group_each_node_s_items_in_order_up_to_the_byte_cap():
    nodes = ["a", "b", "a", "a", "b", "a"]
    sizes = [100, 10, 100, 300, 10, 50]
    assert tasks_by_node(nodes, sizes, cap=250) == [
        ("a", [0, 2]), ("b", [1, 4]), ("a", [3]), ("a", [5])]
    assert tasks_by_node(nodes, sizes) == [("a", [0, 2, 3, 5]), ("b", [1, 4])]
    assert tasks_by_node(nodes) == tasks_by_node(nodes, sizes)
    assert tasks_by_node([], []) == []


def test_files_are_numbered_within_their_partition_in_order():
    from zoo_ray.protocol import SpooledBlock
    from zoo_ray.recompute_server import pieces

    blocks = [SpooledBlock("c1", f"/s/{p}-{k}", p, 10, 80) for p, k in
              ((0, 0), (0, 1), (0, 2), (3, 0), (5, 0), (5, 1))]
    assert pieces(blocks) == [0, 1, 2, 0, 0, 1]
    assert pieces([]) == []


def test_a_failed_recomputation_says_spark_s_reason_in_one_line():
    from zoo_ray.recompute_server import _REASON_CHARS, _reason

    class JavaError(Exception):
        java_exception = SimpleNamespace(toString=lambda: (
            "org.apache.spark.SparkException: Job aborted: java.io.FileNotFoundException: "
            "File does not exist: /user/x/part-0\n\tat org.apache...\n"))

    assert _reason(JavaError("An error occurred while calling z:runJob.")) == (
        "org.apache.spark.SparkException: Job aborted: java.io.FileNotFoundException: "
        "File does not exist: /user/x/part-0")
    assert _reason(RuntimeError("")) == "RuntimeError"
    assert len(_reason(ValueError("x" * 10_000))) == _REASON_CHARS


def test_batches_become_arrow_tables_as_ray_s_map_batches_makes_blocks():
    import numpy as np
    import pandas as pd

    from zoo_ray.executor_data import _as_table

    expected = pa.table({"id": [1, 2], "x": [0.5, 1.0]})
    assert _as_table(expected) is expected
    assert _as_table(expected.to_batches()[0]).equals(expected)
    assert _as_table(pd.DataFrame({"id": [1, 2], "x": [0.5, 1.0]})).equals(expected)
    assert _as_table({"id": np.array([1, 2]), "x": np.array([0.5, 1.0])}).equals(expected)
    assert _as_table(np.array([3, 4])).to_pydict() == {"data": [3, 4]}
    with pytest.raises(InvalidArgumentError, match="an item is a list; give pandas frames"):
        _as_table([1, 2])


def test_partitions_spooled_where_no_node_runs_are_computed_again_in_order(monkeypatch):
    from zoo_ray import spark_to_ray
    from zoo_ray.protocol import SpooledBlock

    monkeypatch.setattr(spark_to_ray, "_REHOME_WAIT_S", 0.0)
    homes = {"node-a": NodeInfo(role="worker", address=None, pid=1, node_ip="127.0.0.1",
                                log_dir="/l", temp_dir="/t", container="c1", executor_id="1")}
    ctx = SimpleNamespace(executor_nodes=lambda: homes, options=SimpleNamespace(scale=1))
    asked: list[list[int]] = []

    def block(container: str, partition: int, piece: str = "") -> SpooledBlock:
        return SpooledBlock(container, f"/{container}/{partition}{piece}", partition, 1, 8)

    def respool(partitions: list[int], into: str) -> list[SpooledBlock]:
        assert into == "conv"
        asked.append(partitions)
        # The first job lands partition 3 on the nodeless executor again.
        return [block("c2" if p == 3 and len(asked) == 1 else "c1", p, "x")
                for p in partitions for _ in range(2)]

    spooled = [block("c1", 0), block("c2", 1), block("c2", 1, "b"), block("c1", 2),
               block("c2", 3)]
    homed = spark_to_ray._homed(ctx, spooled, respool, "conv")  # type: ignore[arg-type]
    assert asked == [[1, 3], [3]]
    assert [(b.partition, b.container) for b in homed] == [
        (0, "c1"), (1, "c1"), (1, "c1"), (2, "c1"), (3, "c1"), (3, "c1")]

    always_lost = spark_to_ray._homed(ctx, [block("c2", 0)], lambda p, into: [block("c2", 0)],
                                      "conv")  # type: ignore[arg-type]
    assert [b.container for b in always_lost] == ["c2"], "tried a bounded number of times"

    fixed = SimpleNamespace(executor_nodes=lambda: homes, options=SimpleNamespace(scale=None))
    kept = spark_to_ray._homed(fixed, [block("c2", 0)], respool, "conv")  # type: ignore[arg-type]
    assert [b.container for b in kept] == ["c2"] and len(asked) == 2, \
        "a fixed-size cluster's executor without a node is no elastic one's: _load names it"
