"""The few PySpark internals zoo_ray relies on, in one place (runs in the driver's process).

PySpark has no public API for these: whether its JVM runs, starting it before a
SparkContext exists (to reach HDFS with Hadoop's client first), how many
executors registered, whether a SparkContext was stopped. Should a PySpark
release move them, this is the one module to change.
"""
from __future__ import annotations

from typing import Any

__all__ = ["active_context", "is_stopped", "jvm_running", "launch_jvm", "registered_executors"]


def active_context() -> Any:
    """The SparkContext running in this process, or None."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context


def jvm_running() -> bool:
    """Whether PySpark's JVM has been started in this process."""
    from pyspark import SparkContext

    return SparkContext._gateway is not None


def launch_jvm(conf: Any) -> Any:
    """Start PySpark's JVM (if it does not run yet) with ``conf``; return its JVM view."""
    from pyspark import SparkContext

    SparkContext._ensure_initialized(conf=conf)
    return SparkContext._jvm


def registered_executors(sc: Any) -> int:
    """How many executors have registered with ``sc``'s driver."""
    # The map holds the driver's block manager too.
    return int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1


def is_stopped(sc: Any) -> bool:
    """Whether ``sc`` was stopped."""
    return sc._jsc is None
