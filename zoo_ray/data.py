"""Spark partitions into Ray's object store and back, node by node (runs on the driver).

Where the data lives, and when it is freed:

- :func:`from_spark`: each Spark task converts its partition with Spark's own
  Arrow conversion (``mapInArrow``) and writes the batches, in files of about
  ``block_size``, into its container's spool (:mod:`zoo_ray.spool`). Then a Ray
  task pinned to the Ray node of that same executor loads each of its files into
  that node's object store, one object per file, and deletes the file. Only file
  names, row counts and the schema reach the driver.
- The driver submits those Ray tasks, so it owns the blocks: they outlive the
  Spark tasks, and they are freed when the Dataset (or :class:`RayPartitions`) is
  released and garbage-collected, or when the RayContext stops. No actor holds
  them; nothing is detached.
- If an executor is lost, its blocks go with it; Ray then re-runs the load task,
  which finds the file gone and has Spark compute just those partitions again
  (:mod:`zoo_ray.block_recovery`, :mod:`zoo_ray.recompute_server`), or, if Spark
  cannot (or the conversion was made with ``recoverable=False``), raises
  :class:`~zoo_ray.errors.BlocksLostError` naming the executor.
- :func:`to_spark`: a Ray task pinned to each node holding blocks writes them to
  that node's spool; a Spark job whose tasks prefer the matching executors
  reads the files back and checkpoints them in Spark's block managers.

The conversions live in :mod:`zoo_ray.spark_to_ray`, :mod:`zoo_ray.ray_to_spark` and
:mod:`zoo_ray.actor_feed`; this module is where users import them from.
"""
from .actor_feed import assign_partitions_to_actors, feed
from .ray_to_spark import to_rdd, to_spark
from .spark_dataset import SparkDataset
from .spark_to_ray import RayPartitions, block_executors, from_rdd, from_rdd_batches, from_spark

__all__ = ["RayPartitions", "SparkDataset", "assign_partitions_to_actors", "block_executors",
           "feed", "from_rdd", "from_rdd_batches", "from_spark", "to_rdd", "to_spark"]
