"""The node-local handoff between a Spark task and a Ray task on the same executor.

Runs on the executors, in PySpark's Python workers and in Ray's workers alike.
Neither side can hand the other an object in memory: a Ray object ``ray.put`` by
a PySpark worker would die with that worker (Ray 2.60 has no ownership transfer).
So the producer writes Arrow IPC (or pickle) files into the container's spool
directory, the consumer on the same node memory-maps them, and the file is gone
as soon as it is read. Files live in the YARN container's working directory, so
YARN removes whatever a crash leaves behind together with the container.

Each conversion has a directory of its own; file names carry the Spark partition
and task attempt, so a retried task never overwrites or duplicates another's file.
"""
from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .protocol import STATE_DIR, container_work_dir

__all__ = [
    "SpooledFile", "conversion_dir", "read_pickle", "read_table", "remove",
    "write_batches", "write_pickle", "write_table", "work_dir",
]

@dataclass(frozen=True)
class SpooledFile:
    """One file written to a spool: where, and what it holds."""

    path: str
    num_rows: int
    size_bytes: int


def work_dir() -> Path:
    """The container's working directory (see :func:`~zoo_ray.protocol.container_work_dir`)."""
    return container_work_dir()


def conversion_dir(conversion: str, root: Path | None = None) -> Path:
    """The spool directory of one conversion in this container (created)."""
    directory = _spool(conversion, root)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _spool(conversion: str, root: Path | None) -> Path:
    return (root or work_dir()) / STATE_DIR / "spool" / conversion


def write_batches(
    batches: Iterable[pa.RecordBatch], directory: Path, stem: str, max_bytes: int
) -> Iterator[SpooledFile]:
    """Write ``batches`` as Arrow IPC files of about ``max_bytes`` each.

    A partition larger than the object store is thus cut into blocks Ray can hold
    (and spill) one by one, never one buffer of the whole partition.
    """
    writer: pa.ipc.RecordBatchFileWriter | None = None
    path, rows, size, count = Path(), 0, 0, 0
    for batch in batches:
        if writer is None:
            path = directory / f"{stem}-{count}.arrow"
            writer = pa.ipc.new_file(str(path), batch.schema)
            rows = size = 0
        writer.write_batch(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if size >= max_bytes:
            writer.close()
            writer, count = None, count + 1
            yield SpooledFile(str(path), rows, size)
    if writer is not None:
        writer.close()
        yield SpooledFile(str(path), rows, size)


def write_table(table: pa.Table, path: Path) -> SpooledFile:
    """Write one table as an Arrow IPC file."""
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    return SpooledFile(str(path), table.num_rows, table.nbytes)


def read_table(path: str) -> pa.Table:
    """Memory-map an Arrow IPC file and delete it; the table stays valid (zero-copy)."""
    with pa.memory_map(path) as source:
        table = pa.ipc.open_file(source).read_all()
    os.unlink(path)
    return table


def write_pickle(items: list[Any], path: Path) -> SpooledFile:
    """Pickle one partition's items (protocol 5: numpy and pandas buffers unchanged)."""
    with open(path, "wb") as file:
        pickle.dump(items, file, protocol=5)
    return SpooledFile(str(path), len(items), path.stat().st_size)


def read_pickle(path: str) -> list[Any]:
    """Read a pickled partition and delete its file."""
    with open(path, "rb") as file:
        items: list[Any] = pickle.load(file)
    os.unlink(path)
    return items


def remove(conversion: str, root: Path | None = None) -> None:
    """Remove a conversion's directory in this container, with any file left in it."""
    shutil.rmtree(_spool(conversion, root), ignore_errors=True)
