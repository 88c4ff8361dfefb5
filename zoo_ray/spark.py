"""Starting a SparkContext on YARN (client mode) or locally, with the Python env shipped.

Runs on the gateway, in the driver's process. :func:`init_spark_on_yarn` is the
first of the three lines users add. It checks its arguments, then everything it
can before asking YARN for anything (configuration, Java, the ResourceManager,
the queue, whether one executor can ever fit), ships the environment and Spark's
jars through the cache in :mod:`zoo_ray.envs`, starts the SparkContext and
returns only when every executor has registered, or kills the application and
says why.
"""
from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from . import spark_internals
from .applications import APP_TAG
from .compat import LOCAL_NAMES, YARN_NAMES, translate
from .envs import (
    ENV_ALIAS,
    PythonEnv,
    find_env,
    pyspark_libs,
    remote_cache_root,
    ship_env,
    ship_pyspark_libs,
    ship_spark_jars,
    ship_zoo_ray,
)
from .errors import (
    ExecutorsNotStartedError,
    HadoopConfError,
    InvalidArgumentError,
    QueueNotFoundError,
    ZooRayError,
)
from .filesystem import ClusterFileSystem
from .hadoop_conf import HadoopConf
from .host import find_java_home, node_ip, wait_until
from .memory import RAY_MEMORY_CONF, ExecutorMemory, format_mib, parse_memory
from .memory import executor_memory as size_executor
from .startup import StartupWatch, find_tagged
from .yarn import ResourceManager

__all__ = ["init_spark_on_yarn", "init_spark_on_local", "ship_environment", "spark_settings",
           "YarnRequest"]

logger = logging.getLogger(__name__)

#: Executors run the shipped environment's interpreter, unpacked under this alias.
_EXECUTOR_PYTHON = f"./{ENV_ALIAS}/bin/python"
_EXECUTOR_POLL_S = 0.5
#: Looks for an interrupted application at the ResourceManager, a second apart.
_ABANDON_LOOKUPS = 3
#: Starts of a SparkContext whose UI lost Spark's race with the ApplicationMaster.
_UI_RACE_ATTEMPTS = 2
_Names = Union[str, Sequence[str], None]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= 1.")
    return value


def _as_list(value: _Names) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


@contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of a block, then restore it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


@dataclass(frozen=True)
class YarnRequest:
    """What init_spark_on_yarn was asked for, checked (see :func:`_check_arguments`)."""

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

    @property
    def container_mb(self) -> int:
        """What YARN is asked for per executor, in whole MB."""
        return -(-self.sizing.container // 2**20)


def _check_arguments(
    hadoop_conf: str | None, conda_name: str | None, num_executors: int, executor_cores: int,
    executor_memory: str, driver_memory: str, driver_cores: int,
    extra_executor_memory_for_ray: str | None, extra_python_lib: _Names,
    penv_archive: str | None, additional_archive: _Names, hadoop_user_name: str | None,
    spark_yarn_archive: str | None, jars: _Names, conf: dict[str, str] | None,
    queue: str | None, app_name: str, env_prefix: str | None, principal: str | None,
    keytab: str | None, tags: _Names, cache_dir: str | None, executor_timeout: float,
) -> YarnRequest:
    """Every argument check, before anything touches the cluster or ``os.environ``."""
    user_conf = dict(conf or {})
    if bool(principal) != bool(keytab):
        raise InvalidArgumentError("Pass principal= and keytab= together (or neither, to use "
                                   "the ticket cache from `kinit`).")
    return YarnRequest(
        hadoop_conf=hadoop_conf,
        num_executors=_positive_int(num_executors, "num_executors"),
        executor_cores=_positive_int(executor_cores, "executor_cores"),
        driver_cores=_positive_int(driver_cores, "driver_cores"),
        sizing=size_executor(executor_memory, extra_executor_memory_for_ray, user_conf),
        driver_heap=parse_memory(driver_memory, "driver_memory"),
        env=find_env(conda_name, env_prefix, penv_archive),
        user_conf=user_conf, extra_python_lib=_as_list(extra_python_lib),
        additional_archive=_as_list(additional_archive), hadoop_user_name=hadoop_user_name,
        spark_yarn_archive=spark_yarn_archive, jars=_as_list(jars), queue=queue,
        app_name=app_name, principal=principal, keytab=keytab, tags=_as_list(tags),
        cache_dir=cache_dir, executor_timeout=executor_timeout,
        launch_tag=f"{APP_TAG}-{secrets.token_hex(8)}",
    )


def hadoop_conf_dir(hadoop_conf: str | None) -> Path:
    """The Hadoop configuration directory: ``hadoop_conf``, else ``$HADOOP_CONF_DIR``."""
    conf_dir = hadoop_conf or os.environ.get("HADOOP_CONF_DIR")
    if not conf_dir:
        raise HadoopConfError(
            "No Hadoop configuration: pass hadoop_conf=<dir with core-site.xml and "
            "yarn-site.xml> (--hadoop-conf) or set HADOOP_CONF_DIR (on a gateway usually "
            "/etc/hadoop/conf; for the local Hadoop, the path `zoo-ray minicluster up` prints)."
        )
    return Path(conf_dir).expanduser().resolve()


def _hadoop_conf(hadoop_conf: str | None) -> HadoopConf:
    return HadoopConf(hadoop_conf_dir(hadoop_conf))


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


def _preflight(request: YarnRequest) -> tuple[HadoopConf, Path, ResourceManager]:
    """Check the gateway and the cluster before submitting: conf, Java, RM, queue, capacity."""
    hconf = _hadoop_conf(request.hadoop_conf)
    java_home = find_java_home()
    rm = ResourceManager.from_conf(hconf)
    rm.cluster_info()
    if request.queue is not None:
        queues = rm.leaf_queues()
        if request.queue not in queues:
            raise QueueNotFoundError(
                f"YARN queue {request.queue!r} does not exist; the queues are: "
                f"{', '.join(queues)}. Pass one of them as queue=."
            )
    _check_fits(rm, request.container_mb, request.executor_cores)
    return hconf, java_home, rm


def spark_settings(request: YarnRequest, driver_host: str | None = None) -> dict[str, str]:
    """The Spark properties of the application, before shipping adds the cluster's URIs.

    A pure function of the request and the gateway's address facing the cluster
    (``driver_host``): the user's ``conf`` wins over zoo_ray's choices, except
    ``spark.executor.memoryOverhead``, to which Ray's share is added.
    """
    sizing = request.sizing
    settings: dict[str, str] = {
        "spark.master": "yarn",
        "spark.submit.deployMode": "client",
        "spark.app.name": request.app_name,
        "spark.executor.instances": str(request.num_executors),
        "spark.executor.cores": str(request.executor_cores),
        "spark.executor.memory": format_mib(sizing.heap),
        "spark.driver.memory": format_mib(request.driver_heap),
        "spark.driver.cores": str(request.driver_cores),
        "spark.executorEnv.PYSPARK_PYTHON": _EXECUTOR_PYTHON,
        "spark.ui.showConsoleProgress": "false",
        # Keeps processes that tasks start (RayManagers) in the executor's process tree.
        "spark.python.daemon.module": "zoo_ray.executor_daemon",
    }
    if driver_host:
        # Executors reach the driver on the interface that faces the cluster, not on
        # whatever the gateway's hostname resolves to (often loopback, or another network).
        settings["spark.driver.host"] = driver_host
    if sizing.ray:
        # What RayContext may give Ray's object store and processes, per executor.
        settings[RAY_MEMORY_CONF] = str(sizing.ray)
    if request.queue:
        settings["spark.yarn.queue"] = request.queue
    if request.jars:
        settings["spark.jars"] = ",".join(request.jars)
    if request.principal and request.keytab:
        settings.update({"spark.kerberos.principal": request.principal,
                         "spark.kerberos.keytab": request.keytab})
    settings.update({k: v for k, v in request.user_conf.items()
                     if k != "spark.executor.memoryOverhead"})
    settings["spark.executor.memoryOverhead"] = format_mib(sizing.overhead)
    # zoo_ray's tags join the user's (tags=, or spark.yarn.tags in conf), never give way:
    # the start-up watch, Ctrl-C's cleanup, status and stop find the application by them.
    user_tags = _as_list(request.user_conf.get("spark.yarn.tags"))
    tags = dict.fromkeys([APP_TAG, request.launch_tag, *request.tags, *user_tags])
    settings["spark.yarn.tags"] = ",".join(tags)
    return settings


def _restart_jvm_for(conf_dir: Path) -> None:
    """End a JVM left from a SparkContext on another cluster: Spark's YARN client reads the
    Hadoop configuration the JVM started with, and would submit there."""
    running = spark_internals.jvm_env("HADOOP_CONF_DIR")
    if running is not None and os.path.realpath(running) != os.path.realpath(conf_dir):
        logger.info("Restarting PySpark's JVM: it read the Hadoop configuration in %s, this "
                    "application's is %s", running, conf_dir)
        spark_internals.stop_jvm()


def _driver_host(rm: ResourceManager) -> str | None:
    """The gateway's address facing the ResourceManager, if that says anything.

    A loopback answer for a ResourceManager not addressed as loopback (its name
    resolves to 127.0.1.1 on its own machine, or it listens on 0.0.0.0) would hide
    the driver from remote executors: then Spark picks, as without zoo_ray.
    """
    address = node_ip(toward=rm.host)
    if ipaddress.ip_address(address).is_loopback and not _is_loopback_literal(rm.host):
        return None
    return address


def _is_loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jvm_environment(hconf: HadoopConf, java_home: Path, hadoop_user_name: str | None) -> None:
    """What Spark's JVM reads from the environment when it starts: the cluster's
    configuration, Java, and the user to act as."""
    _restart_jvm_for(hconf.conf_dir)
    os.environ["HADOOP_CONF_DIR"] = str(hconf.conf_dir)
    os.environ.setdefault("JAVA_HOME", str(java_home))
    if hadoop_user_name:
        os.environ["HADOOP_USER_NAME"] = hadoop_user_name


def _remote_root(hconf: HadoopConf, hadoop_user_name: str | None, cache_dir: str | None) -> str:
    user = hadoop_user_name or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
    return remote_cache_root(hconf.require("fs.defaultFS"), user, cache_dir)


def ship_environment(hadoop_conf: str | None = None, conda_name: str | None = None,
                     env_prefix: str | None = None, cache_dir: str | None = None
                     ) -> dict[str, Any]:
    """Pack an environment (or reuse its pack) and upload it unless the cluster has it.

    The first step of :func:`init_spark_on_yarn` on its own (``zoo-ray pack``): the
    next application with this environment starts without packing or uploading.

    Parameters
    ----------
    hadoop_conf, conda_name, env_prefix, cache_dir
        As for :func:`init_spark_on_yarn`; with neither ``conda_name`` nor
        ``env_prefix``, the environment running this Python.

    Returns
    -------
    dict
        The cache entry: ``kind``, ``prefix``, the local ``archive``, its ``bytes``,
        and the ``remote`` URI on the cluster.
    """
    from pyspark import SparkConf

    env = find_env(conda_name, env_prefix, None)
    hconf = _hadoop_conf(hadoop_conf)
    _jvm_environment(hconf, find_java_home(), None)
    remote_root = _remote_root(hconf, None, cache_dir)
    fs = ClusterFileSystem(spark_internals.launch_jvm(SparkConf()), hconf.conf_dir)
    remote, archive = ship_env(env, fs, remote_root)
    return {"kind": env.kind, "prefix": env.location, "archive": str(archive),
            "bytes": archive.stat().st_size, "remote": remote}


def _ship(request: YarnRequest, hconf: HadoopConf, java_home: Path,
          rm: ResourceManager) -> Any:
    """Start Spark's JVM and upload what the cluster lacks; return the SparkConf to start with."""
    from pyspark import SparkConf

    _jvm_environment(hconf, java_home, request.hadoop_user_name)
    import pyspark

    spark_home = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)
    remote_root = _remote_root(hconf, request.hadoop_user_name, request.cache_dir)
    py_libs = pyspark_libs(spark_home, remote_root)
    shipped_libs = ",".join(remote for _, remote in py_libs)
    # The JVM reads it from its environment when it submits (a user's own setting wins).
    launch_env = ({"PYSPARK_ARCHIVES_PATH": shipped_libs}
                  if py_libs and "PYSPARK_ARCHIVES_PATH" not in os.environ else {})
    # loadDefaults keeps what spark-submit set when the JVM started (spark.yarn.isPython, which
    # makes YARN ship pyspark.zip), should the JVM already run.
    spark_conf = SparkConf().setAll(list(spark_settings(request, _driver_host(rm)).items()))
    fs = ClusterFileSystem(spark_internals.launch_jvm(spark_conf, launch_env), hconf.conf_dir)
    # A JVM that was already running (started for `zoo-ray pack`, say) keeps its own setting.
    if spark_internals.jvm_env("PYSPARK_ARCHIVES_PATH") == shipped_libs:
        ship_pyspark_libs(fs, py_libs)
    # Executors import zoo_ray from this zip (RayManager, the subreaper daemon).
    spark_conf.set("spark.yarn.dist.pyFiles", ship_zoo_ray(fs, remote_root))
    archives = [f"{ship_env(request.env, fs, remote_root)[0]}#{ENV_ALIAS}"]
    spark_conf.set("spark.yarn.dist.archives", ",".join(archives + request.additional_archive))
    yarn_archive = request.spark_yarn_archive
    if not (yarn_archive or "spark.yarn.archive" in request.user_conf
            or "spark.yarn.jars" in request.user_conf):
        yarn_archive = ship_spark_jars(spark_home, fs, remote_root)
    if yarn_archive:
        spark_conf.set("spark.yarn.archive", yarn_archive)
    return spark_conf


def _start_and_wait(request: YarnRequest, spark_conf: Any, rm: ResourceManager) -> Any:
    """Start the SparkContext and wait for every executor, or kill the application."""
    with StartupWatch(rm, request.launch_tag, request.num_executors,
                      request.executor_timeout) as watch:
        try:
            sc = _new_context(request, spark_conf, rm)
        except KeyboardInterrupt:
            _abandon_start(rm, request.launch_tag)
            raise
        except Exception:
            if watch.killed_unscheduled:
                raise _unscheduled_error(request, watch.app) from None
            raise
        try:
            _wait_for_executors(sc, rm, request.num_executors, request.executor_timeout)
        except BaseException:
            if spark_internals.active_context() is sc:
                rm.kill(sc.applicationId, diagnostics="zoo_ray: start-up interrupted")
                sc.stop()
            raise
    logger.info("SparkContext %s on YARN is ready with %d executors", sc.applicationId,
                request.num_executors)
    return sc


def _new_context(request: YarnRequest, spark_conf: Any, rm: ResourceManager) -> Any:
    """``SparkContext(...)``, started again once if Spark's UI lost a race.

    Spark 4 attaches its UI handlers while the ApplicationMaster, registering at the
    same moment, has the driver add YARN's proxy filter to them; Jetty then fails
    with a ConcurrentModificationException and the SparkContext with it. A second
    start (the first application killed) does not meet the same moment.
    """
    from pyspark import SparkContext

    for attempt in range(_UI_RACE_ATTEMPTS):
        try:
            # The driver tells executors which interpreter to run from its PYSPARK_PYTHON,
            # read once when the SparkContext starts.
            with _env_var("PYSPARK_PYTHON", _EXECUTOR_PYTHON):
                return SparkContext(conf=spark_conf, pyFiles=request.extra_python_lib or None)
        except Exception as exc:
            if "ConcurrentModificationException" not in str(exc) or (
                    attempt + 1 == _UI_RACE_ATTEMPTS):
                raise
            logger.warning("Spark's UI failed to start (a race in Spark with the "
                           "ApplicationMaster registering); starting the application again")
            app = find_tagged(rm, request.launch_tag)
            if app is not None:
                rm.kill(app["id"], diagnostics="zoo_ray: Spark's UI failed to start; restarted")
    raise AssertionError("unreachable: the last attempt returns or raises")


def _abandon_start(rm: ResourceManager, tag: str) -> None:
    """Undo a SparkContext start interrupted mid-way (Ctrl-C in a notebook cell).

    Spark's JVM goes on starting the application after Python stops waiting for
    it, so the JVM is ended first (nothing can be submitted after that), then the
    application, if YARN has it, is killed. The next init_spark_on_yarn starts a
    fresh JVM.
    """
    logger.warning("Interrupted while Spark's application was starting: stopping it")
    try:
        spark_internals.stop_jvm()
    except Exception as exc:  # the kill below still ends the application
        logger.warning("Spark's JVM did not stop cleanly: %s", exc)
    # The ResourceManager may still be registering a submission made just before.
    for attempt in range(_ABANDON_LOOKUPS):
        try:
            app = find_tagged(rm, tag)
            if app is not None:
                rm.kill(app["id"], diagnostics="zoo_ray: start-up interrupted")
                return
        except ZooRayError as exc:
            logger.warning("Could not reach the ResourceManager to end the application: %s",
                           exc)
        if attempt + 1 < _ABANDON_LOOKUPS:
            time.sleep(1.0)


def _unscheduled_error(request: YarnRequest, app: dict[str, Any] | None) -> ZooRayError:
    app = app or {}
    queue = app.get("queue") or request.queue or "default"
    return ExecutorsNotStartedError(
        f"YARN did not start application {app.get('id', '(unknown)')} within "
        f"{request.executor_timeout:.0f}s: it stayed {app.get('state', 'ACCEPTED')} in queue "
        f"{queue!r} (the queue is full, or its share for ApplicationMasters is used up), so it "
        "was killed. Wait for room or ask the queue's admins, pass another queue=, or raise "
        f"executor_timeout. YARN diagnostics: {app.get('diagnostics') or '(none)'}"
    )


def _wait_for_executors(sc: Any, rm: ResourceManager, wanted: int, timeout: float) -> None:
    """Return once ``wanted`` executors registered; else kill the application and say why."""
    if wait_until(lambda: spark_internals.registered_executors(sc) >= wanted, timeout,
                  interval=_EXECUTOR_POLL_S):
        return
    app_id = sc.applicationId
    got = spark_internals.registered_executors(sc)
    try:
        diagnostics = rm.app(app_id).get("diagnostics") or "(none)"
        metrics = rm.metrics()
        free = (f"{metrics['availableMB']} MB and {metrics['availableVirtualCores']} "
                "vcores free in the cluster")
    except ZooRayError as exc:
        diagnostics, free = str(exc), "cluster capacity unknown"
    # Kill before stopping: a stopped SparkContext unregisters as FINISHED, hiding
    # from YARN's admins that the application never got its executors.
    rm.kill(app_id, diagnostics=f"zoo_ray: only {got} of {wanted} executors started in "
                                f"{timeout:.0f}s")
    sc.stop()
    raise ExecutorsNotStartedError(
        f"YARN started {got} of {wanted} executors within {timeout:.0f}s ({free}); "
        f"application {app_id} was killed. Ask for fewer or smaller executors, use "
        f"another queue, or raise executor_timeout. YARN diagnostics: {diagnostics}"
    )


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
    **zoo_names
        Analytics Zoo's spellings (``num_executor``, ``spark_conf``, ``py_files``) work
        with a DeprecationWarning; the README's migration table lists every one.

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
    Each names the fix in its message; nothing is left running.
    """
    renamed = translate("init_spark_on_yarn", zoo_names, YARN_NAMES,
                        {"conf": conf, "extra_python_lib": extra_python_lib})
    num_executors = renamed.get("num_executors", num_executors)
    conf = renamed.get("conf", conf)
    extra_python_lib = renamed.get("extra_python_lib", extra_python_lib)
    request = _check_arguments(
        hadoop_conf, conda_name, num_executors, executor_cores, executor_memory, driver_memory,
        driver_cores, extra_executor_memory_for_ray, extra_python_lib, penv_archive,
        additional_archive, hadoop_user_name, spark_yarn_archive, jars, conf, queue, app_name,
        env_prefix, principal, keytab, tags, cache_dir, executor_timeout,
    )
    active = spark_internals.active_context()
    if active is not None:
        logger.warning("A SparkContext is already running (%s); returning it unchanged. "
                       "Call sc.stop() first to start another.", active.applicationId)
        return active
    hconf, java_home, rm = _preflight(request)
    spark_conf = _ship(request, hconf, java_home, rm)
    sizing = request.sizing
    logger.info(
        "Executors: %d x %d vcores, heap %s + overhead %s (%s user/Spark default + %s for Ray)"
        " = %d MB containers; env %s %s",
        request.num_executors, request.executor_cores, format_mib(sizing.heap),
        format_mib(sizing.overhead), format_mib(sizing.overhead - sizing.ray),
        format_mib(sizing.ray) if sizing.ray else "0m", request.container_mb, request.env.kind,
        request.env.location,
    )
    return _with_log_level(_start_and_wait(request, spark_conf, rm), spark_log_level)


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
        Analytics Zoo's spellings; see the README's migration table.

    Returns
    -------
    pyspark.SparkContext
    """
    from pyspark import SparkConf, SparkContext

    translate("init_spark_on_local", zoo_names, LOCAL_NAMES, {})

    if cores != "*":
        cores = _positive_int(cores, "cores")
    spark_conf = SparkConf().setMaster(f"local[{cores}]").setAppName("zoo_ray")
    spark_conf.set("spark.ui.showConsoleProgress", "false")
    spark_conf.setAll(list((conf or {}).items()))
    # Read once, when the SparkContext starts.
    with _env_var("PYSPARK_PYTHON", python_location or sys.executable):
        return _with_log_level(SparkContext.getOrCreate(spark_conf), spark_log_level)
