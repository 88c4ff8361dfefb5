"""The Ray Dataset ``from_spark`` returns: Spark's pandas dtypes, its columns when empty,
and an explicit release (runs on the driver; a worker that gets the Dataset unpickles it).

:class:`SparkDataset` is a ``MaterializedDataset`` over blocks whose rows, bytes and
schema the conversion already knows (no metadata task per block), built through Ray
Data internals that setup.py pins the Ray minor versions of. It differs from Ray's own
in what users compare with Spark:

- pandas frames have numpy dtypes, as ``df.toPandas()`` and Spark's ``mapInPandas``
  give them (``int64``, not Ray 2.60's ``int64[pyarrow]``), in ``to_pandas()`` on the
  driver and in the batches of remote tasks; unless
  ``RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION`` is set;
- an empty one keeps its columns in ``to_pandas()`` (Ray 2.60 drops them for any empty
  Dataset, ray-project/ray#59946);
- :meth:`SparkDataset.release` lets its blocks go now, not when the Dataset is
  garbage-collected.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray
from ray.data._internal.execution.interfaces import BlockEntry, RefBundle
from ray.data._internal.logical.interfaces import LogicalPlan
from ray.data._internal.logical.operators.from_operators import FromArrow
from ray.data._internal.stats import DatasetStats
from ray.data.block import BlockMetadataWithSchema
from ray.data.context import DataContext
from ray.data.dataset import MaterializedDataset

from .errors import BlocksLostError

__all__ = ["SparkDataset", "dataset_from_blocks"]

#: Set it to keep Ray's default (Arrow-backed pandas frames) for from_spark's Datasets.
_ARROW_PANDAS_ENV = "RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION"


@ray.remote(num_cpus=0, max_retries=0)
def _released(why: str) -> None:
    """The stand-in block of a released Dataset: reading it raises."""
    raise BlocksLostError(why)


class SparkDataset(MaterializedDataset):
    """A Ray Dataset made by ``zoo_ray.data.from_spark``: Ray's, with Spark's pandas dtypes
    and columns, and :meth:`release`. Datasets derived from it are Ray's own."""

    _released_why = ""
    _arrow_schema: pa.Schema | None = None

    def to_pandas(self, limit: int | None = None) -> Any:
        """All rows as one pandas frame, with the dtypes ``df.toPandas()`` gives.

        Parameters
        ----------
        limit : int, optional
            Ray's: raise ValueError beyond this many rows.
        """
        # Ray formats the frames in this process with the process's DataContext, not
        # the Dataset's own.
        with DataContext.current(self._context):
            frame = super().to_pandas(limit)
            if len(frame.columns) == 0 and self._arrow_schema is not None:
                frame = self._arrow_schema.empty_table().to_pandas()
        return frame

    def release(self) -> None:
        """Let this Dataset's blocks go now: Ray frees them once nothing else holds them
        (a Dataset derived from this one after it ran, refs the program took).

        Reading the Dataset afterwards raises BlocksLostError. Idempotent.
        """
        if self._released_why:
            return
        self._released_why = ("The Dataset's blocks were let go by release(); run "
                              "from_spark again to convert the DataFrame anew.")
        stand_in: Any = _released.remote(self._released_why)
        source = self._logical_plan.dag
        if isinstance(source, FromArrow):
            source.input_data[:] = [
                RefBundle(tuple(BlockEntry(stand_in, entry.metadata) for entry in bundle.blocks),
                          owns_blocks=False, schema=bundle.schema)
                for bundle in source.input_data]
        self._cache = type(self._cache)()
        # Ray keeps the executor of the Dataset's last run (for its stats), and with it
        # the bundles that run read.
        executor, self._current_executor = self._current_executor, None
        if executor is not None:
            executor.shutdown(force=True)

    @property
    def released(self) -> bool:
        """Whether :meth:`release` let the blocks go."""
        return bool(self._released_why)

    # Ray's Dataset pickles a fixed set of fields: carry this class's own too (a worker
    # that gets the Dataset keeps its empty frame's columns and knows it was released).
    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        return {**state, "zoo_ray": (self._arrow_schema, self._released_why)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._arrow_schema, self._released_why = state.get("zoo_ray", (None, ""))
        super().__setstate__(state)


def dataset_from_blocks(
    refs: Sequence[Any], rows: Sequence[int], sizes: Sequence[int], schema: pa.Schema
) -> SparkDataset:
    """A :class:`SparkDataset` over Arrow blocks of known rows, bytes and schema (none:
    an empty Dataset with the schema's columns)."""
    metadata = [
        BlockMetadataWithSchema(num_rows=n, size_bytes=size, exec_stats=None, input_files=None,
                                schema=schema)
        for n, size in zip(rows, sizes)
    ]
    context = DataContext.get_current().copy()
    if _ARROW_PANDAS_ENV not in os.environ:
        # pandas batches as Spark's mapInPandas gives them (numpy dtypes): Ray 2.60's
        # Arrow-backed frames lack operators such as `%`.
        context.enable_arrow_backed_pandas_conversion = False
    plan = LogicalPlan(FromArrow(list(refs), metadata), context)
    by_operator: dict[str, Any] = {"FromArrow": metadata}
    dataset = SparkDataset(plan, context, DatasetStats(metadata=by_operator, parent=None))
    dataset._arrow_schema = schema
    return dataset
