"""Analytics Zoo / BigDL spellings: each one works with a DeprecationWarning or gets a typed error.

Runs on the driver (the gateway). Programs written for Zoo's RayOnSpark run with
only their imports changed; every Zoo-era parameter that zoo_ray spells
differently is mapped here, once, and docs/migration.md lists them
all. Nothing is ignored silently: a name either becomes its new spelling (with a
``DeprecationWarning`` naming it) or raises :class:`InvalidArgumentError` saying
what replaces it and why.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from .errors import InvalidArgumentError

__all__ = [
    "INIT_NAMES", "LOCAL_NAMES", "RAY_CONTEXT_NAMES", "YARN_NAMES", "Refused", "Renamed",
    "moved", "translate", "warn_renamed",
]


@dataclass(frozen=True)
class Renamed:
    """A Zoo parameter zoo_ray spells ``new``."""

    new: str


@dataclass(frozen=True)
class Refused:
    """A Zoo parameter with no meaning in zoo_ray; ``why`` names what replaces it."""

    why: str


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """The DeprecationWarning every renamed Zoo name gives."""
    warnings.warn(f"{old} is Analytics Zoo's spelling; use {new}.", DeprecationWarning,
                  stacklevel=stacklevel)


def moved(old_module: str, home: str, names: list[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for Zoo's import paths: each name warns and is zoo_ray's.

    Parameters
    ----------
    old_module : str
        The Zoo-era module (``zoo_ray.ray``, ...) whose ``__getattr__`` this is.
    home : str
        The module that defines ``names`` (``zoo_ray.context``, ...). Named directly,
        not taken from the package: modules below ``zoo_ray/__init__.py`` never
        import the package itself.
    names : list of str
        The names Zoo imported from ``old_module``.
    """
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warn_renamed(f"{old_module}.{name}", f"`from zoo_ray import {name}`", stacklevel=3)
        return getattr(import_module(home), name)

    return __getattr__


def translate(function: str, given: dict[str, Any], names: dict[str, Renamed | Refused],
              explicit: dict[str, Any]) -> dict[str, Any]:
    """Map Zoo keyword arguments ``given`` of ``function`` onto zoo_ray's.

    ``explicit`` holds the new-spelling arguments the caller passed too, so that
    passing both spellings is an error rather than a silent choice.

    Returns
    -------
    dict
        New name -> value, for the renamed arguments.

    Raises
    ------
    InvalidArgumentError
        A refused Zoo name, both spellings at once, or a name neither zoo_ray nor
        Zoo knows.
    """
    renamed: dict[str, Any] = {}
    for old, value in given.items():
        rule = names.get(old)
        if rule is None:
            raise InvalidArgumentError(
                f"{function}() got an unexpected keyword argument {old!r}.")
        if isinstance(rule, Refused):
            raise InvalidArgumentError(f"{function}({old}=...): {rule.why}")
        if explicit.get(rule.new) is not None:
            raise InvalidArgumentError(
                f"{function}() got both {old} (Analytics Zoo's spelling) and {rule.new}; "
                f"pass only {rule.new}.")
        warn_renamed(f"{function}({old}=...)", f"{rule.new}=", stacklevel=4)
        renamed[rule.new] = value
    return renamed


_NO_REDIRECT = Refused(
    "zoo_ray does not redirect Spark's log to a file; Spark logs as its log4j2 configuration "
    "says. Drop the argument (spark_log_level sets the level).")

#: init_spark_on_yarn's Zoo (0.6-0.11) and BigDL (2.x) spellings.
YARN_NAMES: dict[str, Renamed | Refused] = {
    "num_executor": Renamed("num_executors"),
    "spark_conf": Renamed("conf"),
    "py_files": Renamed("extra_python_lib"),
    "redirect_spark_log": _NO_REDIRECT,
}

#: init_spark_on_local's Zoo spellings.
LOCAL_NAMES: dict[str, Renamed | Refused] = {"redirect_spark_log": _NO_REDIRECT}

_NO_PASSWORD = Refused(
    "Ray 2.60 has no Redis password: zoo_ray protects each cluster with a fresh random token "
    "(Ray's token authentication) that never appears on a command line. Drop the argument.")
_NO_WAITING = Refused(
    "init() waits until every node has registered, not a fixed time; init_timeout bounds that "
    "wait. Drop the argument (or pass init_timeout).")

#: RayContext's Zoo (0.6-0.11) and BigDL (2.x) spellings.
RAY_CONTEXT_NAMES: dict[str, Renamed | Refused] = {
    "redis_port": Refused(
        "Ray 2.60 has no Redis. zoo_ray picks a free GCS port on the head's executor, so "
        "several applications share hosts; drop the argument."),
    "password": _NO_PASSWORD,
    "redis_password": _NO_PASSWORD,
    "local_ray_node_num": Refused(
        "zoo_ray runs one Ray node per executor (num_ray_nodes), and one node in local mode. "
        "Drop the argument; ask init_spark_on_yarn for more executors instead."),
    "waiting_time_sec": _NO_WAITING,
    "waitting_time_sec": _NO_WAITING,
}

#: RayContext.init's Zoo 0.6-0.7 arguments, which later Zoo moved to the constructor.
INIT_NAMES: dict[str, Renamed | Refused] = {
    "object_store_memory": Refused("pass it to RayContext(object_store_memory=...)."),
    "num_cores": Refused("the driver's node takes init(driver_cores=...)."),
    "labels": Refused("pass custom resources as RayContext(extra_params={'resources': "
                      "'{\"name\": 1}'})."),
    "extra_params": Refused("pass it to RayContext(extra_params=...)."),
}
