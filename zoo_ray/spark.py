"""Starting a SparkContext on YARN (client mode) or locally, with the Python env shipped.

Runs on the gateway, in the driver's process. :func:`init_spark_on_yarn` is the
first of the three lines users add. It checks its arguments
(:mod:`zoo_ray.yarn_request`), then everything it can before asking YARN for
anything (:mod:`zoo_ray.preflight`: configuration, Java, the ResourceManager, the
queue, whether one executor can ever fit), ships the environment and Spark's jars
through the cache in :mod:`zoo_ray.envs` (:mod:`zoo_ray.shipping`, with the
properties of :mod:`zoo_ray.spark_settings`), starts the SparkContext and returns
only when every executor has registered, or kills the application and says why
(:mod:`zoo_ray.spark_start`). :func:`init_spark_on_local` is the same prelude on a
laptop.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import spark_internals
from .app_master_watch import AppMasterWatch
from .compat import LOCAL_NAMES, YARN_NAMES, translate
from .host import env_var
from .login_watch import LoginWatch
from .memory import format_mib
from .preflight import preflight
from .shipping import ship_application
from .spark_start import start_and_wait
from .yarn_request import check_arguments, positive_int

__all__ = ["init_spark_on_yarn", "init_spark_on_local"]

logger = logging.getLogger(__name__)


def init_spark_on_yarn(
    hadoop_conf: str | None = None,
    conda_name: str | None = None,
    num_executors: int = 2,
    executor_cores: int = 2,
    executor_memory: str = "2g",
    driver_memory: str = "1g",
    driver_cores: int = 4,
    extra_executor_memory_for_ray: str | None = None,
    extra_python_lib: str | Sequence[str] | None = None,
    penv_archive: str | None = None,
    additional_archive: str | Sequence[str] | None = None,
    hadoop_user_name: str | None = None,
    spark_yarn_archive: str | None = None,
    jars: str | Sequence[str] | None = None,
    conf: dict[str, str] | None = None,
    queue: str | None = None,
    app_name: str = "zoo_ray",
    env_prefix: str | None = None,
    principal: str | None = None,
    keytab: str | None = None,
    tags: str | Sequence[str] | None = None,
    cache_dir: str | None = None,
    executor_timeout: float = 300.0,
    spark_log_level: str | None = None,
    executor_gpus: int = 0,
    **zoo_names: Any,
) -> Any:
    """Start a SparkContext on YARN (client mode) whose executors run your Python env.

    Parameters
    ----------
    hadoop_conf : str, optional
        The gateway's Hadoop client configuration directory. Defaults to
        ``$HADOOP_CONF_DIR``.
    conda_name : str, optional
        Conda environment (name, or prefix) to pack with conda-pack and ship.
    num_executors, executor_cores : int
        How many executors, and vcores per executor.
    executor_memory, driver_memory : str
        JVM heap of each executor and of the driver, like "2g".
    driver_cores : int
        ``spark.driver.cores``.
    extra_executor_memory_for_ray : str, optional
        Memory each executor container reserves for Ray (object store and Ray's
        processes). Added to ``spark.executor.memoryOverhead`` from ``conf`` (or to
        Spark's default overhead), never put in its place.
    extra_python_lib : str or list of str, optional
        ``.py``/``.zip``/``.egg`` files importable on executors.
    penv_archive : str, optional
        A prebuilt environment archive (``conda pack``/``venv-pack``), a local path
        or an ``hdfs://`` URI, used as is instead of packing.
    additional_archive : str or list of str, optional
        More archives for ``spark.yarn.dist.archives`` (``path#alias``).
    hadoop_user_name : str, optional
        ``HADOOP_USER_NAME`` for clusters with simple authentication.
    spark_yarn_archive : str, optional
        Your own ``spark.yarn.archive``; without it zoo_ray uploads Spark's jars once
        per Spark installation and reuses them.
    jars : str or list of str, optional
        Extra jars (``spark.jars``).
    conf : dict, optional
        Further Spark properties. They win over zoo_ray's, except
        ``spark.executor.memoryOverhead``, to which Ray's share is added.
    queue : str, optional
        YARN queue; checked to exist before submitting.
    app_name : str
        Application name shown by YARN.
    env_prefix : str, optional
        Prefix of a conda env or virtualenv/venv to ship (instead of ``conda_name``).
        Without ``conda_name``, ``env_prefix`` and ``penv_archive``, the running
        interpreter's environment is shipped.
    principal, keytab : str, optional
        Kerberos login for Spark (``spark.kerberos.principal``/``keytab``); after
        ``kinit`` the ticket cache is used without them.
    tags : str or list of str, optional
        YARN application tags.
    cache_dir : str, optional
        Cache directory (a URI) on the cluster file system for environments, Spark's
        jars, pyspark.zip and zoo_ray itself; default
        ``<fs.defaultFS>/user/<user>/.zoo_ray/cache``.
    executor_timeout : float
        Seconds to wait for every executor to register before killing the application.
    spark_log_level : str, optional
        ``sc.setLogLevel`` once the SparkContext runs, like "WARN".
    executor_gpus : int
        GPUs (YARN's ``yarn.io/gpu``) per executor; each executor's Ray node gets exactly
        its container's devices (``docs/gpus.md``). 0: none.
    **zoo_names
        Analytics Zoo's spellings (``num_executor``, ``spark_conf``, ``py_files``) work
        with a DeprecationWarning; docs/migration.md lists every one.

    Returns
    -------
    pyspark.SparkContext

    Raises
    ------
    InvalidArgumentError, InvalidMemoryError, CondaEnvNotFoundError, NoPythonEnvError,
    NotAPythonEnvError
        Bad arguments, found before anything touches the cluster or ``os.environ``.
    HadoopConfError, JavaNotFoundError, ResourceManagerError, QueueNotFoundError,
    ExecutorsNotStartedError
        The gateway or the cluster cannot run the application.
    GpuRequestError
        ``executor_gpus`` the cluster cannot give: no ``yarn.io/gpu`` on its NodeManagers,
        or none with as many.
    KerberosError, KerberosUnavailableError
        On a secure cluster: no ticket, an expired one, a keytab that does not hold
        ``principal``, a principal the KDC refuses, ``KRB5_CONFIG`` naming no file, or no
        Kerberos library (``docs/secure-clusters.md``).
    Each names the fix in its message; nothing is left running.
    """
    renamed = translate("init_spark_on_yarn", zoo_names, YARN_NAMES,
                        {"conf": conf, "extra_python_lib": extra_python_lib})
    num_executors = renamed.get("num_executors", num_executors)
    conf = renamed.get("conf", conf)
    extra_python_lib = renamed.get("extra_python_lib", extra_python_lib)
    request = check_arguments(
        hadoop_conf, conda_name, num_executors, executor_cores, executor_memory, driver_memory,
        driver_cores, extra_executor_memory_for_ray, extra_python_lib, penv_archive,
        additional_archive, hadoop_user_name, spark_yarn_archive, jars, conf, queue, app_name,
        env_prefix, principal, keytab, tags, cache_dir, executor_timeout, executor_gpus,
    )
    active = spark_internals.active_context()
    if active is not None:
        logger.warning("A SparkContext is already running (%s); returning it unchanged. "
                       "Call sc.stop() first to start another.", active.applicationId)
        return active
    gateway = preflight(request)
    spark_conf = ship_application(request, gateway)
    sizing = request.sizing
    logger.info(
        "Executors: %d x %d vcores, heap %s + overhead %s (%s user/Spark default + %s for Ray)"
        " = %d MB containers; env %s %s",
        request.num_executors, request.executor_cores, format_mib(sizing.heap),
        format_mib(sizing.overhead), format_mib(sizing.overhead - sizing.ray),
        format_mib(sizing.ray) if sizing.ray else "0m", request.container_mb, request.env.kind,
        request.env.location,
    )
    sc = start_and_wait(request, spark_conf, gateway.rm)
    if gateway.app_master.unmanaged:
        AppMasterWatch(sc).start()
    if gateway.login is not None and gateway.login.ends_at is not None:
        LoginWatch(gateway.login.ends_at, lambda: not spark_internals.is_stopped(sc)).start()
    return _with_log_level(sc, spark_log_level)


def _with_log_level(sc: Any, level: str | None) -> Any:
    if level is not None:
        sc.setLogLevel(level)
    return sc


def init_spark_on_local(
    cores: int | str = 2,
    conf: dict[str, str] | None = None,
    python_location: str | None = None,
    spark_log_level: str | None = None,
    **zoo_names: Any,
) -> Any:
    """Start a local-mode SparkContext: the same prelude on a laptop.

    Parameters
    ----------
    cores : int or "*"
        Worker threads (``local[cores]``).
    conf : dict, optional
        Further Spark properties.
    python_location : str, optional
        Interpreter for Python workers; defaults to the running one.
    spark_log_level : str, optional
        ``sc.setLogLevel`` once the SparkContext runs, like "WARN".
    **zoo_names
        Analytics Zoo's spellings; see docs/migration.md.

    Returns
    -------
    pyspark.SparkContext
    """
    from pyspark import SparkConf, SparkContext

    translate("init_spark_on_local", zoo_names, LOCAL_NAMES, {})

    if cores != "*":
        cores = positive_int(cores, "cores")
    spark_conf = SparkConf().setMaster(f"local[{cores}]").setAppName("zoo_ray")
    spark_conf.set("spark.ui.showConsoleProgress", "false")
    spark_conf.setAll(list((conf or {}).items()))
    # Read once, when the SparkContext starts.
    with env_var("PYSPARK_PYTHON", python_location or sys.executable):
        return _with_log_level(SparkContext.getOrCreate(spark_conf), spark_log_level)
