"""Shipping what executors need to the cluster's file system, and Spark's JVM to do it.

Runs on the gateway, in the driver's process. It sets what Spark's JVM reads from
``os.environ`` when it starts (the cluster's configuration, Java, the user), starts
that JVM (it reaches HDFS through Hadoop's client), and uploads what the cluster's
cache lacks: the Python environment, pyspark's libraries, zoo_ray itself and
Spark's jars (see :mod:`zoo_ray.env_shipping` and :mod:`zoo_ray.envs`).
:func:`ship_environment` is that step on its own (``zoo-ray pack``).
"""
from __future__ import annotations

import getpass
import logging
import os
from pathlib import Path
from typing import Any

from . import spark_internals
from .cache import cache_root
from .env_shipping import ship_env
from .envs import (
    find_env,
    pyspark_libs,
    remote_cache_root,
    ship_pyspark_libs,
    ship_spark_jars,
    ship_zoo_ray,
)
from .filesystem import ClusterFileSystem
from .gpu_claims import discovery_script
from .hadoop_conf import HadoopConf, hadoop_conf_dir
from .host import find_java_home
from .kerberos import check_login, secure
from .preflight import Gateway
from .spark_settings import EXECUTOR_PYTHON, driver_host, login_settings, spark_settings
from .yarn_request import YarnRequest, as_list, check_login_pair

__all__ = ["ship_application", "ship_environment"]

logger = logging.getLogger(__name__)


def _restart_stale_jvm(conf_dir: Path) -> None:
    """End a JVM left from an earlier SparkContext that would start this one wrong: one on
    another cluster (Spark's YARN client reads the Hadoop configuration the JVM started
    with, and would submit there), or one whose SparkContext ended after running an
    unmanaged ApplicationMaster (the next would register as the old application, and
    hang in ACCEPTED)."""
    running = spark_internals.jvm_env("HADOOP_CONF_DIR")
    if running is not None and os.path.realpath(running) != os.path.realpath(conf_dir):
        logger.info("Restarting PySpark's JVM: it read the Hadoop configuration in %s, this "
                    "application's is %s", running, conf_dir)
        spark_internals.stop_jvm()
    elif spark_internals.active_context() is None and spark_internals.holds_am_token():
        logger.info("Restarting PySpark's JVM: an earlier application's ApplicationMaster "
                    "ran in it")
        spark_internals.stop_jvm()


def _jvm_environment(hconf: HadoopConf, java_home: Path, hadoop_user_name: str | None) -> None:
    """What Spark's JVM reads from the environment when it starts: the cluster's
    configuration, Java, and the user to act as."""
    _restart_stale_jvm(hconf.conf_dir)
    os.environ["HADOOP_CONF_DIR"] = str(hconf.conf_dir)
    os.environ.setdefault("JAVA_HOME", str(java_home))
    if hadoop_user_name:
        os.environ["HADOOP_USER_NAME"] = hadoop_user_name


def _hadoop_user(hadoop_user_name: str | None) -> str:
    """Who the application acts as under simple authentication (Hadoop's own choice)."""
    return hadoop_user_name or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


def _remote_root(hconf: HadoopConf, hadoop_user_name: str | None, cache_dir: str | None) -> str:
    return remote_cache_root(hconf.require("fs.defaultFS"), _hadoop_user(hadoop_user_name),
                             cache_dir)


def ship_environment(hadoop_conf: str | None = None, conda_name: str | None = None,
                     env_prefix: str | None = None, cache_dir: str | None = None,
                     principal: str | None = None, keytab: str | None = None
                     ) -> dict[str, Any]:
    """Pack an environment (or reuse its pack) and upload it unless the cluster has it.

    The first step of :func:`~zoo_ray.spark.init_spark_on_yarn` on its own (``zoo-ray pack``): the
    next application with this environment starts without packing or uploading.

    Parameters
    ----------
    hadoop_conf, conda_name, env_prefix, cache_dir, principal, keytab
        As for :func:`~zoo_ray.spark.init_spark_on_yarn`; with neither ``conda_name`` nor
        ``env_prefix``, the environment running this Python.

    Returns
    -------
    dict
        :meth:`~zoo_ray.env_shipping.ShippedEnv.to_dict`: ``kind``, ``prefix``, ``layered``,
        ``bytes``, and the ``parts`` (``link``, ``remote`` URI on the cluster, ``bytes``).

    Raises
    ------
    InvalidArgumentError
        ``principal`` without ``keytab``, or the reverse.
    KerberosError
        On a secure cluster: the login is not usable (see
        :func:`~zoo_ray.kerberos.check_login`).
    """
    from pyspark import SparkConf

    check_login_pair(principal, keytab)
    env = find_env(conda_name, env_prefix, None)
    hconf = HadoopConf(hadoop_conf_dir(hadoop_conf))
    login = check_login(principal, keytab) if secure(hconf) else None
    _jvm_environment(hconf, find_java_home(), None)
    remote_root = _remote_root(hconf, None, cache_dir)
    # The JVM that writes to HDFS logs in as Spark's driver would, and is fit for a
    # SparkContext started later in this process: spark-submit sets spark.yarn.isPython
    # (YARN ships pyspark.zip) only for a JVM launched for YARN.
    conf = SparkConf().setAll([("spark.master", "yarn"), ("spark.submit.deployMode", "client"),
                               *(login_settings(login).items() if login else [])])
    fs, _ = _launch_jvm(hconf, conf, remote_root)
    return ship_env(env, fs, remote_root).to_dict()


def _launch_jvm(hconf: HadoopConf, spark_conf: Any, remote_root: str
                ) -> tuple[ClusterFileSystem, Path]:
    """Start Spark's JVM (unless it runs) as every application of this process needs it,
    whichever call starts it: a SparkContext started later in it reuses it. Returns the
    cluster's file system through it, and Spark's home."""
    import pyspark

    spark_home = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)
    py_libs = pyspark_libs(spark_home, remote_root)
    shipped_libs = ",".join(remote for _, remote in py_libs)
    # The JVM reads it from its environment when it submits (a user's own setting wins).
    launch_env = ({"PYSPARK_ARCHIVES_PATH": shipped_libs}
                  if py_libs and "PYSPARK_ARCHIVES_PATH" not in os.environ else {})
    fs = ClusterFileSystem(spark_internals.launch_jvm(spark_conf, launch_env), hconf.conf_dir)
    # A JVM that was already running (started by a user's own SparkContext, say) keeps
    # its own setting.
    if spark_internals.jvm_env("PYSPARK_ARCHIVES_PATH") == shipped_libs:
        ship_pyspark_libs(fs, py_libs)
    return fs, spark_home


def ship_application(request: YarnRequest, gateway: Gateway) -> Any:
    """Start Spark's JVM and upload what the cluster lacks; return the SparkConf to start with.

    Parameters
    ----------
    request : YarnRequest
        What to ship, and the Spark properties (:func:`~zoo_ray.spark_settings.spark_settings`).
    gateway : Gateway
        What :func:`~zoo_ray.preflight.preflight` found.

    Returns
    -------
    pyspark.SparkConf
        The application's properties with the shipped files' URIs.
    """
    from pyspark import SparkConf

    hconf = gateway.conf
    _jvm_environment(hconf, gateway.java_home, request.hadoop_user_name)
    remote_root = _remote_root(hconf, request.hadoop_user_name, request.cache_dir)
    # loadDefaults keeps what spark-submit set when the JVM started (spark.yarn.isPython, which
    # makes YARN ship pyspark.zip), should the JVM already run.
    settings = spark_settings(request, driver_host(gateway.rm), gateway.login,
                              _hadoop_user(request.hadoop_user_name),
                              gateway.app_master.unmanaged)
    spark_conf = SparkConf().setAll(list(settings.items()))
    fs, spark_home = _launch_jvm(hconf, spark_conf, remote_root)
    # Executors import zoo_ray from this zip (RayManager, the subreaper daemon).
    spark_conf.set("spark.yarn.dist.pyFiles", ship_zoo_ray(fs, remote_root))
    if request.executor_gpus:
        script = discovery_script(cache_root() / "scripts", EXECUTOR_PYTHON)
        files = as_list(request.user_conf.get("spark.yarn.dist.files"))
        spark_conf.set("spark.yarn.dist.files", ",".join([*files, str(script)]))
    archives = [part.entry for part in ship_env(request.env, fs, remote_root).parts]
    spark_conf.set("spark.yarn.dist.archives", ",".join(archives + request.additional_archive))
    yarn_archive = request.spark_yarn_archive
    if not (yarn_archive or "spark.yarn.archive" in request.user_conf
            or "spark.yarn.jars" in request.user_conf):
        yarn_archive = ship_spark_jars(spark_home, fs, remote_root)
    if yarn_archive:
        spark_conf.set("spark.yarn.archive", yarn_archive)
    return spark_conf
