"""The Spark properties of an application on YARN, from the checked request.

Runs on the gateway, in the driver's process, and starts nothing:
:func:`spark_settings` is a pure function of the :class:`~zoo_ray.yarn_request.YarnRequest`,
of the gateway's address facing the cluster (:func:`driver_host`) and of the user's
Kerberos login (:func:`login_settings`, also what ``zoo-ray pack``'s JVM is given).
"""
from __future__ import annotations

import ipaddress

from .app_master import UNMANAGED_AM_CONF
from .applications import APP_TAG
from .envs import ENV_ALIAS
from .gpu_claims import DISCOVERY_SCRIPT, GPU_AMOUNT_CONF, GPUS_ENV
from .host import node_ip
from .kerberos import Login
from .memory import RAY_MEMORY_CONF, format_mib
from .yarn import ResourceManager
from .yarn_request import YarnRequest, as_list

__all__ = ["EXECUTOR_PYTHON", "driver_host", "login_settings", "spark_settings"]

#: Where Spark takes each of its JVMs' options (client mode: the driver is this process's).
_JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.yarn.am.extraJavaOptions",
                 "spark.executor.extraJavaOptions")

#: Executors run the shipped environment's interpreter, unpacked under this alias.
EXECUTOR_PYTHON = f"./{ENV_ALIAS}/bin/python"


def spark_settings(request: YarnRequest, driver_host: str | None = None,
                   login: Login | None = None, user: str | None = None,
                   unmanaged_am: bool = False) -> dict[str, str]:
    """The Spark properties of the application, before shipping adds the cluster's URIs.

    A pure function of the request, the gateway's address facing the cluster
    (``driver_host``), the user's Kerberos ``login`` on a secure cluster, the Hadoop
    ``user`` the application acts as otherwise, and whether Spark's ApplicationMaster
    runs in the driver's process (``unmanaged_am``, see :mod:`zoo_ray.app_master`): the user's
    ``conf`` wins over zoo_ray's choices, except ``spark.executor.memoryOverhead``, to
    which Ray's share is added, the JVM options a login needs, which go before the
    user's own, and ``spark.yarn.unmanagedAM.enabled``, which ``unmanaged_am`` decides.
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
        "spark.executorEnv.PYSPARK_PYTHON": EXECUTOR_PYTHON,
        "spark.ui.showConsoleProgress": "false",
        # Keeps processes that tasks start (RayManagers) in the executor's process tree.
        "spark.python.daemon.module": "zoo_ray.executor_daemon",
        # zoo_ray waits for every executor itself, for executor_timeout, and says why
        # when YARN gives fewer. Spark's own wait first (80 % of them, or 30 s) made a
        # start YARN cannot satisfy last 30 s longer than executor_timeout.
        "spark.scheduler.minRegisteredResourcesRatio": "0",
    }
    if unmanaged_am and login is None and user:
        # A container's AM passed its SPARK_USER on to the executors; this process has
        # none, and without it executors act as the NodeManager's user under simple auth.
        settings["spark.executorEnv.SPARK_USER"] = user
    if driver_host:
        # Executors reach the driver on the interface that faces the cluster, not on
        # whatever the gateway's hostname resolves to (often loopback, or another network).
        settings["spark.driver.host"] = driver_host
    if sizing.ray:
        # What RayContext may give Ray's object store and processes, per executor.
        settings[RAY_MEMORY_CONF] = str(sizing.ray)
    if request.executor_gpus:
        # No spark.task.resource.gpu.amount: Spark's own tasks hold no GPU, so they run as
        # many at a time as before, and every GPU stays with the executor's Ray node.
        settings.update({
            GPU_AMOUNT_CONF: str(request.executor_gpus),
            "spark.executor.resource.gpu.discoveryScript": f"./{DISCOVERY_SCRIPT}",
            f"spark.executorEnv.{GPUS_ENV}": str(request.executor_gpus),
        })
    if request.queue:
        settings["spark.yarn.queue"] = request.queue
    if request.jars:
        settings["spark.jars"] = ",".join(request.jars)
    if request.principal and request.keytab:
        settings.update({"spark.kerberos.principal": request.principal,
                         "spark.kerberos.keytab": request.keytab})
    for_login = login_settings(login) if login else {}
    settings.update({k: v for k, v in for_login.items() if k not in _JAVA_OPTIONS})
    settings.update({k: v for k, v in request.user_conf.items()
                     if k != "spark.executor.memoryOverhead"})
    for key in _JAVA_OPTIONS:
        if key in for_login:
            settings[key] = " ".join([for_login[key], request.user_conf.get(key, "")]).strip()
    settings["spark.executor.memoryOverhead"] = format_mib(sizing.overhead)
    # zoo_ray.app_master's choice took the user's setting into account: it is the answer.
    settings[UNMANAGED_AM_CONF] = str(unmanaged_am).lower()
    # zoo_ray's tags join the user's (tags=, or spark.yarn.tags in conf), never give way:
    # the start-up watch, Ctrl-C's cleanup, status and stop find the application by them.
    user_tags = as_list(request.user_conf.get("spark.yarn.tags"))
    tags = dict.fromkeys([APP_TAG, request.launch_tag, *request.tags, *user_tags])
    settings["spark.yarn.tags"] = ",".join(tags)
    return settings


#: How far into its tokens' renewal time Spark fetches new ones (see login_settings).
_RENEWAL_RATIO = "0.4"


def login_settings(login: Login) -> dict[str, str]:
    """The Spark properties of a Kerberos login.

    Parameters
    ----------
    login : Login
        As :func:`~zoo_ray.kerberos.check_login` found it.

    Returns
    -------
    dict
        The keytab Spark logs in from, or that it renews its delegation tokens from the
        ticket cache (while its ticket lasts); and the options that name the realm to
        each of its JVMs.
    """
    if login.keytab and login.principal:
        settings = {"spark.kerberos.principal": login.principal,
                    "spark.kerberos.keytab": login.keytab}
    else:
        settings = {"spark.kerberos.renewal.credentials": "ccache"}
    # New tokens before 50 % of the old ones' life, not Spark's 75 %: an executor that
    # registers while the driver sends new tokens misses them (Spark sends only to the
    # executors it knows), and must live on the old ones until the next round. zoo_ray
    # replaces lost executors, so late registrations are common.
    settings["spark.security.credentials.renewalRatio"] = _RENEWAL_RATIO
    if login.java_options:
        settings.update(dict.fromkeys(_JAVA_OPTIONS, " ".join(login.java_options)))
    return settings


def driver_host(rm: ResourceManager) -> str | None:
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
