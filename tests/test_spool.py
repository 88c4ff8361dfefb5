"""Unit tests of the node-local spool (files only; no cluster)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from zoo_ray import spool
from zoo_ray.protocol import STATE_DIR, WORK_DIR_ENV


def _batches(n: int, rows: int) -> list[pa.RecordBatch]:
    return [pa.record_batch({"x": np.arange(rows, dtype="float64") + i * rows,
                             "s": [f"zoë{j}" for j in range(rows)]}) for i in range(n)]


def test_batches_are_cut_into_files_of_bounded_size(tmp_path):
    batches = _batches(10, 1000)
    one = batches[0].nbytes
    written = list(spool.write_batches(batches, tmp_path, "p0-a0", max_bytes=3 * one))
    assert [w.num_rows for w in written] == [3000, 3000, 3000, 1000]
    assert all(w.size_bytes <= 3 * one for w in written)
    tables = [spool.read_table(w.path) for w in written]
    assert pa.concat_tables(tables).equals(pa.Table.from_batches(batches))


def test_reading_a_file_removes_it(tmp_path):
    (written,) = spool.write_batches(_batches(1, 10), tmp_path, "p1-a0", max_bytes=1 << 20)
    table = spool.read_table(written.path)
    assert not (tmp_path / "p1-a0-0.arrow").exists()
    assert table.column("x").to_pylist()[:3] == [0.0, 1.0, 2.0]


def test_no_batches_no_files(tmp_path):
    assert list(spool.write_batches([], tmp_path, "p2-a0", max_bytes=1)) == []
    assert list(tmp_path.iterdir()) == []


def test_pickled_partitions_round_trip_numpy_and_objects(tmp_path):
    items = [np.arange(5), {"a": 1}, "zoë"]
    written = spool.write_pickle(items, tmp_path / "p0.pickle")
    assert written.num_rows == 3
    back = spool.read_pickle(written.path)
    assert np.array_equal(back[0], items[0]) and back[1:] == items[1:]
    assert not (tmp_path / "p0.pickle").exists()


def test_conversion_dirs_live_in_the_work_dir_and_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv(WORK_DIR_ENV, str(tmp_path))
    directory = spool.conversion_dir("c1")
    assert directory == tmp_path / STATE_DIR / "spool" / "c1" and directory.is_dir()
    spool.write_table(pa.table({"x": [1]}), directory / "b0.arrow")
    spool.remove("c1")
    assert not directory.exists()
    spool.remove("c1")  # idempotent
