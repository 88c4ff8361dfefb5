"""Starting a SparkContext on YARN (client mode) or locally, with the Python env shipped.

:func:`init_spark_on_yarn` is the first of the three lines users add. It checks
everything it can before asking YARN for anything (configuration, Java, the
ResourceManager, the queue, memory strings, whether one executor can ever fit),
ships the environment and Spark's jars through the cache in :mod:`zoo_ray.envs`,
starts the SparkContext and returns only when every executor has registered, or
kills the application and says why.
"""
from __future__ import annotations

import getpass
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .envs import (
    ENV_ALIAS,
    find_env,
    pyspark_libs,
    remote_cache_root,
    ship_env,
    ship_pyspark_libs,
    ship_spark_jars,
    ship_zoo_ray,
)
from .errors import ExecutorsNotStartedError, HadoopConfError, QueueNotFoundError, ZooRayError
from .hadoop_conf import HadoopConf
from .hdfs import ClusterFileSystem
from .local import find_java_home
from .resources import executor_memory as size_executor
from .resources import RAY_MEMORY_CONF, format_mib, parse_memory
from .yarn import ResourceManager

__all__ = ["init_spark_on_yarn", "init_spark_on_local"]

logger = logging.getLogger(__name__)

_EXECUTOR_POLL_S = 0.5


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ZooRayError(f"{name}={value!r} must be a whole number >= 1.")
    return value


def _hadoop_conf(hadoop_conf: Optional[str]) -> HadoopConf:
    conf_dir = hadoop_conf or os.environ.get("HADOOP_CONF_DIR")
    if not conf_dir:
        raise HadoopConfError(
            "No Hadoop configuration: pass hadoop_conf=<dir with core-site.xml and "
            "yarn-site.xml> or set HADOOP_CONF_DIR (on a gateway usually /etc/hadoop/conf; for "
            "the local Hadoop, the path `zoo-ray minicluster up` prints)."
        )
    return HadoopConf(Path(conf_dir).expanduser().resolve())


def _as_list(value: Union[str, Sequence[str], None]) -> List[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


def _check_fits(rm: ResourceManager, container_mb: int, cores: int) -> None:
    """Fail fast when no NodeManager could ever hold one executor."""
    nodes = rm.nodes(states="RUNNING")
    if not nodes:
        raise ExecutorsNotStartedError(
            f"The ResourceManager at {rm.webapp_address} has no RUNNING NodeManagers, so no "
            "executor can start. Check the NodeManagers (YARN UI, Nodes page)."
        )
    best_mb = max(n["totalResource"]["memory"] for n in nodes)
    best_cores = max(n["totalResource"]["vCores"] for n in nodes)
    if container_mb > best_mb or cores > best_cores:
        raise ExecutorsNotStartedError(
            f"Each executor needs {container_mb} MB and {cores} vcores (memory plus overhead "
            f"plus extra_executor_memory_for_ray), but the largest NodeManager offers "
            f"{best_mb} MB and {best_cores} vcores. Lower executor_memory, "
            "extra_executor_memory_for_ray or executor_cores."
        )


def _registered_executors(sc: Any) -> int:
    # The map holds the driver's block manager too.
    return int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1


def _wait_for_executors(sc: Any, rm: ResourceManager, wanted: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _registered_executors(sc) < wanted:
        if time.monotonic() > deadline:
            app_id = sc.applicationId
            got = _registered_executors(sc)
            try:
                diagnostics = rm.app(app_id).get("diagnostics") or "(none)"
                metrics = rm.metrics()
                free = (f"{metrics['availableMB']} MB and {metrics['availableVirtualCores']} "
                        "vcores free in the cluster")
            except ZooRayError as exc:
                diagnostics, free = str(exc), "cluster capacity unknown"
            # Kill before stopping: a stopped SparkContext unregisters as FINISHED, hiding
            # from YARN's admins that the application never got its executors.
            reason = f"zoo_ray: only {got} of {wanted} executors started in {timeout:.0f}s"
            rm.kill(app_id, diagnostics=reason)
            sc.stop()
            raise ExecutorsNotStartedError(
                f"YARN started {got} of {wanted} executors within {timeout:.0f}s ({free}); "
                f"application {app_id} was killed. Ask for fewer or smaller executors, use "
                "another queue, or raise executor_timeout. YARN diagnostics: "
                f"{diagnostics}"
            )
        time.sleep(_EXECUTOR_POLL_S)


def init_spark_on_yarn(
    hadoop_conf: Optional[str] = None,
    conda_name: Optional[str] = None,
    num_executors: int = 2,
    executor_cores: int = 2,
    executor_memory: str = "2g",
    driver_memory: str = "1g",
    driver_cores: int = 4,
    extra_executor_memory_for_ray: Optional[str] = None,
    extra_python_lib: Union[str, Sequence[str], None] = None,
    penv_archive: Optional[str] = None,
    additional_archive: Union[str, Sequence[str], None] = None,
    hadoop_user_name: Optional[str] = None,
    spark_yarn_archive: Optional[str] = None,
    jars: Union[str, Sequence[str], None] = None,
    conf: Optional[Dict[str, str]] = None,
    queue: Optional[str] = None,
    app_name: str = "zoo_ray",
    env_prefix: Optional[str] = None,
    principal: Optional[str] = None,
    keytab: Optional[str] = None,
    tags: Union[str, Sequence[str], None] = None,
    cache_dir: Optional[str] = None,
    executor_timeout: float = 300.0,
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

    Returns
    -------
    pyspark.SparkContext

    Raises
    ------
    InvalidMemoryError, HadoopConfError, JavaNotFoundError, ResourceManagerError,
    QueueNotFoundError, CondaEnvNotFoundError, NoPythonEnvError, NotAPythonEnvError,
    ExecutorsNotStartedError
        Each with the fix in its message; nothing is left running.
    """
    from pyspark import SparkConf, SparkContext

    num_executors = _positive_int(num_executors, "num_executors")
    executor_cores = _positive_int(executor_cores, "executor_cores")
    driver_cores = _positive_int(driver_cores, "driver_cores")
    user_conf = dict(conf or {})
    sizing = size_executor(executor_memory, extra_executor_memory_for_ray, user_conf)
    driver_heap = parse_memory(driver_memory, "driver_memory")

    active = SparkContext._active_spark_context
    if active is not None:
        logger.warning("A SparkContext is already running (%s); returning it unchanged. "
                       "Call sc.stop() first to start another.", active.applicationId)
        return active

    hconf = _hadoop_conf(hadoop_conf)
    java_home = find_java_home()
    rm = ResourceManager.from_conf(hconf)
    rm.cluster_info()
    if queue is not None:
        queues = rm.leaf_queues()
        if queue not in queues:
            raise QueueNotFoundError(
                f"YARN queue {queue!r} does not exist; the queues are: {', '.join(queues)}. "
                "Pass one of them as queue=."
            )
    container_mb = -(-sizing.container // 2**20)
    _check_fits(rm, container_mb, executor_cores)
    env = find_env(conda_name, env_prefix, penv_archive)

    os.environ["HADOOP_CONF_DIR"] = str(hconf.conf_dir)
    os.environ.setdefault("JAVA_HOME", str(java_home))
    if hadoop_user_name:
        os.environ["HADOOP_USER_NAME"] = hadoop_user_name
    python = f"./{ENV_ALIAS}/bin/python"
    settings: Dict[str, str] = {
        "spark.master": "yarn",
        "spark.submit.deployMode": "client",
        "spark.app.name": app_name,
        "spark.executor.instances": str(num_executors),
        "spark.executor.cores": str(executor_cores),
        "spark.executor.memory": format_mib(sizing.heap),
        "spark.driver.memory": format_mib(driver_heap),
        "spark.driver.cores": str(driver_cores),
        "spark.executorEnv.PYSPARK_PYTHON": python,
        "spark.ui.showConsoleProgress": "false",
        # Keeps processes that tasks start (RayManagers) in the executor's process tree.
        "spark.python.daemon.module": "zoo_ray.executor_daemon",
    }
    if sizing.ray:
        # What RayContext may give Ray's object store and processes, per executor.
        settings[RAY_MEMORY_CONF] = str(sizing.ray)
    if queue:
        settings["spark.yarn.queue"] = queue
    if tags:
        settings["spark.yarn.tags"] = ",".join(_as_list(tags))
    if jars:
        settings["spark.jars"] = ",".join(_as_list(jars))
    if bool(principal) != bool(keytab):
        raise ZooRayError("Pass principal= and keytab= together (or neither, to use the "
                          "ticket cache from `kinit`).")
    if principal:
        settings.update({"spark.kerberos.principal": principal, "spark.kerberos.keytab": keytab})
    settings.update({k: v for k, v in user_conf.items() if k != "spark.executor.memoryOverhead"})
    settings["spark.executor.memoryOverhead"] = format_mib(sizing.overhead)

    # loadDefaults keeps what spark-submit set when the JVM started (spark.yarn.isPython, which
    # makes YARN ship pyspark.zip), should the JVM already run.
    import pyspark

    spark_home = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)
    user = hadoop_user_name or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
    remote_root = remote_cache_root(hconf.require("fs.defaultFS"), user, cache_dir)
    py_libs = pyspark_libs(spark_home, remote_root)
    if SparkContext._gateway is None and py_libs and "PYSPARK_ARCHIVES_PATH" not in os.environ:
        # Read from the JVM's environment when it submits: set before the JVM starts.
        os.environ["PYSPARK_ARCHIVES_PATH"] = ",".join(remote for _, remote in py_libs)
    spark_conf = SparkConf().setAll(settings.items())
    SparkContext._ensure_initialized(conf=spark_conf)
    fs = ClusterFileSystem(SparkContext._jvm, hconf.conf_dir)
    if os.environ.get("PYSPARK_ARCHIVES_PATH") == ",".join(remote for _, remote in py_libs):
        ship_pyspark_libs(fs, py_libs)
    # Executors import zoo_ray from this zip (RayManager, the subreaper daemon).
    spark_conf.set("spark.yarn.dist.pyFiles", ship_zoo_ray(fs, remote_root))
    archives = [f"{ship_env(env, fs, remote_root)}#{ENV_ALIAS}"] + _as_list(additional_archive)
    spark_conf.set("spark.yarn.dist.archives", ",".join(archives))
    if not (spark_yarn_archive or "spark.yarn.archive" in user_conf
            or "spark.yarn.jars" in user_conf):
        spark_yarn_archive = ship_spark_jars(spark_home, fs, remote_root)
    if spark_yarn_archive:
        spark_conf.set("spark.yarn.archive", spark_yarn_archive)

    logger.info(
        "Executors: %d x %d vcores, heap %s + overhead %s (%s user/Spark default + %s for Ray)"
        " = %d MB containers; env %s %s",
        num_executors, executor_cores, format_mib(sizing.heap), format_mib(sizing.overhead),
        format_mib(sizing.overhead - sizing.ray), format_mib(sizing.ray) if sizing.ray else "0m",
        container_mb, env.kind, env.location,
    )
    # The driver tells executors which interpreter to run from its PYSPARK_PYTHON, read
    # once when the SparkContext starts.
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = python
    try:
        sc = SparkContext(conf=spark_conf, pyFiles=_as_list(extra_python_lib) or None)
    finally:
        if previous is None:
            del os.environ["PYSPARK_PYTHON"]
        else:
            os.environ["PYSPARK_PYTHON"] = previous
    try:
        _wait_for_executors(sc, rm, num_executors, executor_timeout)
    except BaseException:
        if SparkContext._active_spark_context is sc:
            rm.kill(sc.applicationId, diagnostics="zoo_ray: start-up interrupted")
            sc.stop()
        raise
    logger.info("SparkContext %s on YARN is ready with %d executors", sc.applicationId,
                num_executors)
    return sc


def init_spark_on_local(
    cores: Union[int, str] = 2,
    conf: Optional[Dict[str, str]] = None,
    python_location: Optional[str] = None,
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

    Returns
    -------
    pyspark.SparkContext
    """
    from pyspark import SparkConf, SparkContext

    if cores != "*":
        cores = _positive_int(cores, "cores")
    os.environ["PYSPARK_PYTHON"] = python_location or sys.executable
    spark_conf = SparkConf().setMaster(f"local[{cores}]").setAppName("zoo_ray")
    spark_conf.set("spark.ui.showConsoleProgress", "false")
    spark_conf.setAll((conf or {}).items())
    return SparkContext.getOrCreate(spark_conf)
