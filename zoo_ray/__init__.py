"""zoo_ray: run Ray inside Spark on Hadoop YARN.

Where each module runs:

- gateway (the driver's process): :mod:`~zoo_ray.spark` (init_spark_on_yarn and
  init_spark_on_local) and its steps :mod:`~zoo_ray.yarn_request` (the checked
  arguments), :mod:`~zoo_ray.preflight` (checks against the ResourceManager),
  :mod:`~zoo_ray.shipping` (Spark's JVM, uploads to the cluster's cache),
  :mod:`~zoo_ray.spark_settings` (the SparkConf) and :mod:`~zoo_ray.spark_start`
  (the SparkContext, the wait for executors) with :mod:`~zoo_ray.startup` (a thread
  watching the application come up); :mod:`~zoo_ray.envs`, :mod:`~zoo_ray.cache`,
  :mod:`~zoo_ray.filesystem`, :mod:`~zoo_ray.progress`, :mod:`~zoo_ray.yarn`,
  :mod:`~zoo_ray.hadoop_conf`, :mod:`~zoo_ray.memory`, :mod:`~zoo_ray.spark_internals`,
  :mod:`~zoo_ray.applications` (zoo_ray's applications on YARN), :mod:`~zoo_ray.cli`,
  :mod:`~zoo_ray.submit`, :mod:`~zoo_ray.demo`, :mod:`~zoo_ray.minicluster` (the local
  Hadoop; its own docstring lists its modules);
- driver: :mod:`~zoo_ray.context` (RayContext, a facade) over :mod:`~zoo_ray.options`
  (its checked arguments), :mod:`~zoo_ray.nodes` (starting, waiting for and stopping the
  nodes), :mod:`~zoo_ray.recovery` (healing, rebuilds, the cluster's loss),
  :mod:`~zoo_ray.status` (what the head sees, the card) and
  :mod:`~zoo_ray.zoo_attributes` (Zoo's attribute names); :mod:`~zoo_ray.auth`,
  :mod:`~zoo_ray.display`, :mod:`~zoo_ray.compat` (Zoo's spellings) with Zoo's import
  paths :mod:`~zoo_ray.common` and :mod:`~zoo_ray.ray`; :mod:`~zoo_ray.data` (Spark <->
  Ray data, what users import) over :mod:`~zoo_ray.spark_to_ray`,
  :mod:`~zoo_ray.ray_to_spark`, :mod:`~zoo_ray.actor_feed` (partitions to actors) and
  :mod:`~zoo_ray.conversion` (what they share); :mod:`~zoo_ray.placement`,
  :mod:`~zoo_ray.driver_guard` (the driver's guards on its Ray connection),
  :mod:`~zoo_ray.losses` and :mod:`~zoo_ray.healing` (threads watching the executors);
- driver, and inside Ray tasks: :mod:`~zoo_ray.ray_blocks` (Ray Data internals);
- inside Spark tasks on executors: :mod:`~zoo_ray.executor_tasks`,
  :mod:`~zoo_ray.executor_data`;
- on executors, as Spark's GPU discovery script when an executor starts:
  :mod:`~zoo_ray.gpu_claims` (which of its host's GPUs the executor holds);
- inside Ray tasks on executors' nodes: :mod:`~zoo_ray.ray_tasks`;
- on executors, between Spark tasks and Ray tasks: :mod:`~zoo_ray.spool`;
- long-lived processes on executors: :mod:`~zoo_ray.manager` (one per Ray node),
  :mod:`~zoo_ray.executor_daemon` (PySpark's worker daemon);
- anywhere: :mod:`~zoo_ray.protocol` (the typed messages between them),
  :mod:`~zoo_ray.host` (process, port and file helpers), :mod:`~zoo_ray.leftovers`
  (sweeping what killed processes left in the temp directory), :mod:`~zoo_ray.errors`.

The public API is imported lazily, so that the small processes zoo_ray runs on
executors (``python -m zoo_ray.manager``, ``zoo_ray.executor_daemon``) do not
import PySpark and Ray's driver side just by importing the package.
"""
from typing import Any

__version__ = "0.1.0"
__all__ = ["init_spark_on_yarn", "init_spark_on_local", "RayContext"]

_HOMES = {"init_spark_on_yarn": "spark", "init_spark_on_local": "spark", "RayContext": "context"}


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name not in _HOMES:
        raise AttributeError(f"module 'zoo_ray' has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
