"""Memory strings and the sizing of executors and Ray nodes (gateway and driver side).

One parser for every memory argument zoo_ray takes (``executor_memory``,
``extra_executor_memory_for_ray``, ``object_store_memory``, ...): "512m", "2g",
"1.5g" are accepted; a bare number is ambiguous (bytes? MiB?) and refused, like
everything else that is not a size, with the fix in the message.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError, InvalidMemoryError

__all__ = [
    "MIN_OBJECT_STORE", "RAY_MEMORY_CONF", "RAY_PROCESS_MEMORY", "ExecutorMemory",
    "check_object_store_fits", "container_mib", "executor_memory", "format_mib", "parse_memory",
    "worker_memory",
]

logger = logging.getLogger(__name__)

_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt])(?:i?b)?\s*$", re.IGNORECASE)

#: Spark property init_spark_on_yarn records extra_executor_memory_for_ray in (bytes), for
#: RayContext to check the object store against.
RAY_MEMORY_CONF = "spark.zoo_ray.rayMemory"

#: Memory Ray's own processes (GCS, raylet, agents, a few workers) need besides the object store.
RAY_PROCESS_MEMORY = 512 * 2**20
#: Ray refuses object stores below this (its OBJECT_STORE_MINIMUM_MEMORY_BYTES).
MIN_OBJECT_STORE = 75 * 2**20

#: Spark's default executor overhead: max(384 MiB, 10% of executor memory).
_MIN_OVERHEAD_MIB = 384
_OVERHEAD_FACTOR = 0.10


def parse_memory(value: str | int, name: str = "memory") -> int:
    """Bytes in a memory string such as ``"512m"``, ``"2g"``, ``"1.5GB"``.

    Parameters
    ----------
    value : str or int
        A number with a unit (b, k, m, g, t; optionally followed by "b" or "ib"), or an
        int already in bytes.
    name : str
        The argument's name, used in the error message.

    Raises
    ------
    InvalidMemoryError
        For anything else: "2gg", "-1g", "1.5.5g", "", a bare number, zero.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidMemoryError(
            f"{name}={value!r} is not a memory size. Write it like \"512m\" or \"2g\"."
        )
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY.match(value)
        if not match:
            raise InvalidMemoryError(
                f"{name}={value!r} is not a memory size. Write a positive number and a unit, "
                "like \"512m\", \"2g\" or \"1.5g\" (units: b, k, m, g, t)."
            )
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise InvalidMemoryError(f"{name}={value!r} must be more than zero, e.g. \"512m\".")
    return size


def format_mib(size_bytes: int) -> str:
    """A size in Spark's notation, rounded up to whole MiB: ``"2560m"``."""
    return f"{-(-size_bytes // 2**20)}m"


@dataclass(frozen=True)
class ExecutorMemory:
    """The memory of one executor container, split as Spark and YARN see it (bytes)."""

    heap: int
    overhead: int
    user_overhead: int | None
    ray: int

    @property
    def container(self) -> int:
        """What YARN is asked for: heap plus overhead (before rounding to its increment)."""
        return self.heap + self.overhead


def executor_memory(
    executor_memory: str | int,
    extra_for_ray: str | int | None = None,
    conf: Mapping[str, str] | None = None,
) -> ExecutorMemory:
    """Size an executor: the user's overhead (or Spark's default) *plus* Ray's share.

    ``extra_for_ray`` is added to whatever overhead the user set in ``conf``
    (``spark.executor.memoryOverhead``), never put in its place.
    """
    heap = parse_memory(executor_memory, "executor_memory")
    ray = parse_memory(extra_for_ray, "extra_executor_memory_for_ray") if extra_for_ray else 0
    user = (conf or {}).get("spark.executor.memoryOverhead")
    if user and str(user).strip().isdigit():
        user = f"{user}m"  # Spark reads a bare spark.executor.memoryOverhead as MiB
    user_overhead = parse_memory(user, "spark.executor.memoryOverhead") if user else None
    base = user_overhead if user_overhead is not None else max(
        _MIN_OVERHEAD_MIB * 2**20, int(heap * _OVERHEAD_FACTOR)
    )
    return ExecutorMemory(heap=heap, overhead=base + ray, user_overhead=user_overhead, ray=ray)


def container_mib(conf: Any) -> int | None:
    """The YARN container Spark asks for one executor, in MiB: its memory plus its overhead
    (Ray's share included), as :func:`executor_memory` set them in ``conf``.

    Parameters
    ----------
    conf : pyspark.SparkConf or mapping
        Its ``spark.executor.memory`` and ``spark.executor.memoryOverhead``.

    Returns
    -------
    int or None
        None when the overhead is not set (Spark's default then applies, unknown here).
    """
    overhead = conf.get("spark.executor.memoryOverhead")
    if not overhead:
        return None
    sizes = []
    for name, value in (("spark.executor.memory", conf.get("spark.executor.memory", "1g")),
                        ("spark.executor.memoryOverhead", overhead)):
        value = f"{value}m" if str(value).strip().isdigit() else value  # Spark: bare = MiB
        try:
            sizes.append(parse_memory(value, name))
        except InvalidMemoryError:  # a size Spark reads and zoo_ray does not: unknown here
            return None
    return -(-sum(sizes) // 2**20)


def worker_memory(object_store: int, ray_memory: int) -> int:
    """What Ray's tasks and actors may use in an executor: Ray's share minus the object
    store and Ray's own processes (declared as the node's ``memory`` resource)."""
    return max(0, ray_memory - object_store - RAY_PROCESS_MEMORY)


def check_object_store_fits(object_store: int, ray_memory: int) -> None:
    """Refuse an object store that, with Ray's processes, exceeds Ray's share of an executor.

    Raises
    ------
    InvalidArgumentError
        YARN would kill the executors; the message names both fixes.
    """
    needed = object_store + RAY_PROCESS_MEMORY
    if needed > ray_memory:
        raise InvalidArgumentError(
            f"object_store_memory ({object_store // 2**20} MiB) plus "
            f"{RAY_PROCESS_MEMORY // 2**20} MiB for Ray's own processes does not fit in "
            f"extra_executor_memory_for_ray ({ray_memory // 2**20} MiB): YARN would "
            "kill the executors. Raise extra_executor_memory_for_ray to at least "
            f"{-(-needed // 2**20)}m or lower object_store_memory."
        )
