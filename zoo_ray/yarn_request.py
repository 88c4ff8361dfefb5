"""What init_spark_on_yarn is asked for, checked before anything touches the cluster.

Runs on the gateway, in the driver's process. :func:`check_arguments` turns
init_spark_on_yarn's arguments into a :class:`YarnRequest`, the frozen record every
later step reads (pre-flight, shipping, Spark's settings, the start); a bad argument
raises here, before YARN, the cluster's file system or ``os.environ`` are touched.
"""
from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from .applications import APP_TAG
from .envs import PythonEnv, find_env
from .errors import InvalidArgumentError
from .memory import ExecutorMemory, parse_memory
from .memory import executor_memory as size_executor

__all__ = ["YarnRequest", "as_list", "check_arguments", "check_login_pair", "positive_int"]

_Names = Union[str, Sequence[str], None]


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is a whole number >= 1 (not a bool); else InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= 1.")
    return value


def as_list(value: _Names) -> list[str]:
    """A comma-separated string or a sequence of names as a list (None, "" -> [])."""
    if not value:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


@dataclass(frozen=True)
class YarnRequest:
    """What init_spark_on_yarn was asked for, checked (see :func:`check_arguments`)."""

    hadoop_conf: str | None
    env: PythonEnv
    num_executors: int
    executor_cores: int
    sizing: ExecutorMemory
    driver_heap: int
    driver_cores: int
    user_conf: dict[str, str]
    extra_python_lib: list[str]
    additional_archive: list[str]
    hadoop_user_name: str | None
    spark_yarn_archive: str | None
    jars: list[str]
    queue: str | None
    app_name: str
    principal: str | None
    keytab: str | None
    tags: list[str]
    cache_dir: str | None
    #: A YARN tag only this application carries: found by it while Spark starts it.
    launch_tag: str
    executor_timeout: float
    #: ``yarn.io/gpu`` per executor (0: none).
    executor_gpus: int = 0

    @property
    def container_mb(self) -> int:
        """What YARN is asked for per executor, in whole MB."""
        return -(-self.sizing.container // 2**20)


def _gpus(value: Any, user_conf: dict[str, str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"executor_gpus={value!r} must be a whole number >= 0.")
    mine = [key for key in user_conf if key.startswith(("spark.executor.resource.gpu.",
                                                         "spark.task.resource.gpu."))]
    if value and mine:
        raise InvalidArgumentError(
            f"executor_gpus={value} and conf's {', '.join(sorted(mine))}: zoo_ray sets Spark's "
            "GPU properties itself (its discovery script gives each executor distinct devices); "
            "drop them from conf.")
    return value


def check_login_pair(principal: str | None, keytab: str | None) -> None:
    """Check that a keytab login names both its principal and its keytab, or neither.

    Raises
    ------
    InvalidArgumentError
        One without the other.
    """
    if bool(principal) != bool(keytab):
        raise InvalidArgumentError("Pass principal= and keytab= together (or neither, to use "
                                   "the ticket cache from `kinit`).")


def check_arguments(
    hadoop_conf: str | None, conda_name: str | None, num_executors: int, executor_cores: int,
    executor_memory: str, driver_memory: str, driver_cores: int,
    extra_executor_memory_for_ray: str | None, extra_python_lib: _Names,
    penv_archive: str | None, additional_archive: _Names, hadoop_user_name: str | None,
    spark_yarn_archive: str | None, jars: _Names, conf: dict[str, str] | None,
    queue: str | None, app_name: str, env_prefix: str | None, principal: str | None,
    keytab: str | None, tags: _Names, cache_dir: str | None, executor_timeout: float,
    executor_gpus: int = 0,
) -> YarnRequest:
    """Every argument check, before anything touches the cluster or ``os.environ``.

    Parameters
    ----------
    hadoop_conf, conda_name, num_executors, ...
        As for :func:`~zoo_ray.spark.init_spark_on_yarn`, after Zoo's spellings are mapped.

    Returns
    -------
    YarnRequest

    Raises
    ------
    InvalidArgumentError, InvalidMemoryError, CondaEnvNotFoundError, NoPythonEnvError,
    NotAPythonEnvError
        A bad argument, naming the fix.
    """
    user_conf = dict(conf or {})
    check_login_pair(principal, keytab)
    return YarnRequest(
        hadoop_conf=hadoop_conf,
        num_executors=positive_int(num_executors, "num_executors"),
        executor_cores=positive_int(executor_cores, "executor_cores"),
        driver_cores=positive_int(driver_cores, "driver_cores"),
        sizing=size_executor(executor_memory, extra_executor_memory_for_ray, user_conf),
        driver_heap=parse_memory(driver_memory, "driver_memory"),
        env=find_env(conda_name, env_prefix, penv_archive),
        user_conf=user_conf, extra_python_lib=as_list(extra_python_lib),
        additional_archive=as_list(additional_archive), hadoop_user_name=hadoop_user_name,
        spark_yarn_archive=spark_yarn_archive, jars=as_list(jars), queue=queue,
        app_name=app_name, principal=principal, keytab=keytab, tags=as_list(tags),
        cache_dir=cache_dir, executor_timeout=executor_timeout,
        executor_gpus=_gpus(executor_gpus, user_conf),
        launch_tag=f"{APP_TAG}-{secrets.token_hex(8)}",
    )

