"""The few PySpark internals zoo_ray relies on, in one place (runs in the driver's process).

PySpark has no public API for these: whether its JVM runs, starting it before a
SparkContext exists (to reach HDFS with Hadoop's client first), how many
executors registered, whether a SparkContext was stopped, whether the ApplicationMaster
running in the driver gave up. Should a PySpark release move them, this is the one
module to change.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["active_context", "app_master_gave_up", "holds_am_token", "is_stopped",
           "job_group", "jvm_env", "jvm_running", "launch_jvm", "RemovedExecutor",
           "executors_in_use", "kill_executors", "live_executors", "local_checkpoint",
           "rdd_with_locations", "registered_executors", "removed_executors",
           "request_total_executors", "task_slots"]


def active_context() -> Any:
    """The SparkContext running in this process, or None."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context


def jvm_running() -> bool:
    """Whether PySpark's JVM has been started in this process."""
    from pyspark import SparkContext

    return SparkContext._gateway is not None


def jvm_env(name: str) -> str | None:
    """The environment variable ``name`` as the running JVM started with it (None without
    a JVM, or when it is not set there). The JVM reads ``HADOOP_CONF_DIR`` (on its
    classpath) and ``PYSPARK_ARCHIVES_PATH`` from its environment, fixed at launch."""
    from pyspark import SparkContext

    jvm: Any = SparkContext._jvm
    if SparkContext._gateway is None or jvm is None:
        return None
    value = jvm.java.lang.System.getenv(name)
    return str(value) if value else None


def holds_am_token() -> bool:
    """Whether the running JVM's user holds a YARN ApplicationMaster token: an unmanaged
    ApplicationMaster ran in it. Hadoop's RPC client keeps the connection that token
    authenticated open (cached per user and address) for a while after the application
    ends, and the next unmanaged ApplicationMaster registers through it, as the old one."""
    from pyspark import SparkContext

    jvm: Any = SparkContext._jvm
    if SparkContext._gateway is None or jvm is None:
        return False
    ugi = jvm.org.apache.hadoop.security.UserGroupInformation.getCurrentUser()
    tokens = ugi.getCredentials().getAllTokens().toArray()
    return any(str(token.getKind().toString()) == "YARN_AM_RM_TOKEN" for token in tokens)


def stop_jvm() -> None:
    """End PySpark's JVM (no SparkContext may run), so the next one starts afresh."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    gateway.shutdown()
    # The JVM exits when its stdin closes (it watches the Python process through it).
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(60)
    SparkContext._gateway = None
    SparkContext._jvm = None


def launch_jvm(conf: Any, env: dict[str, str] | None = None) -> Any:
    """Start PySpark's JVM (if it does not run yet) with ``conf``; return its JVM view.

    ``env`` is added to the JVM's environment only: this process's is restored after the
    launch, so no later JVM or child process (a notebook's shell, a second driver)
    inherits settings meant for this one's cluster.
    """
    from pyspark import SparkContext

    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        SparkContext._ensure_initialized(conf=conf)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return SparkContext._jvm


def registered_executors(sc: Any) -> int:
    """How many executors have registered with ``sc``'s driver."""
    # The map holds the driver's block manager too.
    return int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1


def task_slots(sc: Any) -> int:
    """The tasks ``sc``'s executors can run at once, as Spark counts them for a barrier
    stage: executors being killed or lost are left out.

    Parameters
    ----------
    sc : pyspark.SparkContext

    Returns
    -------
    int
        Slots of the default resource profile.
    """
    jsc = sc._jsc.sc()
    return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))


@dataclass(frozen=True)
class RemovedExecutor:
    """An executor the driver has lost, as Spark's status store keeps it."""

    executor_id: str
    host: str
    #: Spark's reason, e.g. YARN's memory-kill diagnostics.
    reason: str
    #: Where its container's log files are served (YARN: the NodeManager's
    #: ``.../containerlogs/<container>/<user>/stderr?start=-4096``), by file name.
    log_urls: dict[str, str] = field(default_factory=dict)


def removed_executors(sc: Any) -> list[RemovedExecutor]:
    """Each executor the driver has lost, from Spark's status store."""
    summaries = sc._jsc.sc().statusStore().executorList(False)
    removed = []
    for i in range(summaries.size()):
        summary = summaries.apply(i)
        if summary.isActive() or summary.id() == "driver":
            continue
        reason = summary.removeReason()
        logs = summary.executorLogs()
        removed.append(RemovedExecutor(
            str(summary.id()), str(summary.hostPort()).rsplit(":", 1)[0],
            str(reason.get()) if reason.isDefined() else "",
            {str(name): str(logs.apply(name)) for name in _scala_keys(logs)}))
    return removed


def _scala_keys(scala_map: Any) -> list[Any]:
    keys = scala_map.keys().iterator()
    found = []
    while keys.hasNext():
        found.append(keys.next())
    return found


@contextmanager
def job_group(sc: Any, group: str, description: str) -> Iterator[None]:
    """Run the calling thread's Spark jobs in job group ``group``, then in none again."""
    sc.setJobGroup(group, description)
    try:
        yield
    finally:
        # PySpark has no clearJobGroup; a null local property is Spark's own way to clear it.
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            sc.setLocalProperty(key, None)


def is_stopped(sc: Any) -> bool:
    """Whether ``sc`` was stopped: by Python, or in the JVM (YARN ended the application,
    and Spark's client stopped the context under Python's feet)."""
    if sc._jsc is None:
        return True
    try:
        return bool(sc._jsc.sc().isStopped())
    except Exception:  # the JVM itself is gone
        return True


def app_master_gave_up(sc: Any) -> str | None:
    """Why the ApplicationMaster in the driver's JVM (``spark.yarn.unmanagedAM.enabled``)
    ended with FAILED, or None while it runs, or when the AM runs in a container.

    Spark's in-driver AM, once it gives up (``spark.executor.maxNumFailures``), only stops
    asking for executors: unlike an AM container it does not end the application, so
    YARN and the driver's monitor never hear of it. Its state is private to Spark's
    client (``Client.appMaster``; ``finished``, ``finalStatus``, ``finalMsg``), read here
    by reflection.
    """
    try:
        backend = sc._jsc.sc().schedulerBackend()
        getter = "org$apache$spark$scheduler$cluster$YarnClientSchedulerBackend$$client"
        if not backend.getClass().getName().endswith("YarnClientSchedulerBackend"):
            return None
        client = getattr(backend, getter)()
        app_master = _private(client, "appMaster")
        if app_master is None or not _private(app_master, "finished"):
            return None
        if str(_private(app_master, "finalStatus")) != "FAILED":
            return None
        return str(_private(app_master, "finalMsg") or "the ApplicationMaster failed")
    except Exception:  # no JVM, no client yet, or another Spark: nothing to tell
        return None


def _private(obj: Any, name: str) -> Any:
    """A private field of a JVM object."""
    field_ = obj.getClass().getDeclaredField(name)
    field_.setAccessible(True)
    return field_.get(obj)


def rdd_with_locations(sc: Any, items: list[tuple[str, list[str]]]) -> Any:
    """An RDD of strings, one per partition, each preferring the given Spark locations."""
    from pyspark import RDD
    from pyspark.serializers import UTF8Deserializer

    jvm = sc._jvm
    seq = jvm.scala.jdk.javaapi.CollectionConverters
    pairs = jvm.java.util.ArrayList()
    for text, locations in items:
        hosts = jvm.java.util.ArrayList()
        for location in locations:
            hosts.add(location)
        pairs.add(jvm.scala.Tuple2(text, seq.asScala(hosts).toSeq()))
    strings = jvm.scala.reflect.ClassManifestFactory.fromClass(
        jvm.java.lang.Class.forName("java.lang.String"))
    jrdd = sc._jsc.sc().makeRDD(seq.asScala(pairs).toSeq(), strings)
    return RDD(jvm.org.apache.spark.api.java.JavaRDD.fromRDD(jrdd, strings), sc,
               UTF8Deserializer())


def local_checkpoint(rdd: Any) -> Any:
    """``rdd`` checkpointed in the executors, computed once now; the RDD returned reads the
    checkpoint. PySpark's ``localCheckpoint()`` marks only the JVM's RDD, and a Python
    function applied to it later would run in one pipeline with ``rdd``'s own, computing
    ``rdd`` again: the RDD returned wraps the JVM's RDD, so nothing pipelines past it."""
    from pyspark import RDD

    jrdd = rdd._jrdd
    jrdd.rdd().localCheckpoint()
    checkpointed: Any = RDD(jrdd, rdd.ctx, rdd._jrdd_deserializer)
    checkpointed.count()
    return checkpointed


def live_executors(sc: Any) -> dict[str, str]:
    """The executors registered with ``sc``'s driver now.

    Parameters
    ----------
    sc : pyspark.SparkContext

    Returns
    -------
    dict
        Host by executor id (the driver left out).
    """
    summaries = sc._jsc.sc().statusStore().executorList(True)
    live = {}
    for i in range(summaries.size()):
        summary = summaries.apply(i)
        if summary.id() != "driver":
            live[str(summary.id())] = str(summary.hostPort()).rsplit(":", 1)[0]
    return live


def executors_in_use(sc: Any) -> set[str]:
    """The executors that run Spark tasks or hold Spark's blocks (cached or checkpointed
    partitions, such as a DataFrame ``to_spark`` returned): giving one back loses work.

    Parameters
    ----------
    sc : pyspark.SparkContext

    Returns
    -------
    set of str
        Their executor ids.
    """
    summaries = sc._jsc.sc().statusStore().executorList(True)
    busy = set()
    for i in range(summaries.size()):
        summary = summaries.apply(i)
        if summary.id() != "driver" and (summary.activeTasks() > 0 or summary.rddBlocks() > 0):
            busy.add(str(summary.id()))
    return busy


def request_total_executors(sc: Any, total: int) -> bool:
    """Ask YARN, through ``sc``'s driver, for ``total`` executors in all (Spark's
    ``requestTotalExecutors``, a developer API; refused beside dynamic allocation).

    Parameters
    ----------
    sc : pyspark.SparkContext
    total : int
        Executors wanted in all, running ones included.

    Returns
    -------
    bool
        Whether Spark's scheduler backend took the request.
    """
    jvm = sc._jvm
    empty = jvm.PythonUtils.toScalaMap(jvm.java.util.HashMap())
    return bool(sc._jsc.sc().requestTotalExecutors(total, 0, empty))


def kill_executors(sc: Any, executor_ids: list[str]) -> bool:
    """Give executors back to YARN (Spark's ``killExecutors``): Spark lowers its target by
    as many, so they are not replaced, and counts no failure.

    Parameters
    ----------
    sc : pyspark.SparkContext
    executor_ids : list of str
        The executors to end.

    Returns
    -------
    bool
        Whether Spark's scheduler backend took the request.
    """
    ids = sc._jvm.java.util.ArrayList()
    for executor_id in executor_ids:
        ids.add(executor_id)
    return bool(sc._jsc.sc().killExecutors(sc._jvm.PythonUtils.toSeq(ids)))
