"""Starting the SparkContext on YARN and waiting until every executor has registered.

Runs on the gateway, in the driver's process, after shipping: ``SparkContext(...)``
submits the application while a :class:`~zoo_ray.startup.StartupWatch` thread shows
its progress. Whatever stops the start (Ctrl-C, a queue that never schedules it,
executors that never come, Spark's UI race) ends the application at YARN too, and
the error says why; nothing is left running.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from . import spark_internals
from .errors import ExecutorsNotStartedError, ZooRayError
from .host import env_var, wait_until
from .spark_settings import EXECUTOR_PYTHON
from .startup import StartupWatch, find_tagged
from .yarn import ResourceManager, why_not_granted
from .yarn_request import YarnRequest

__all__ = ["start_and_wait"]

logger = logging.getLogger(__name__)

_EXECUTOR_POLL_S = 0.5
#: Looks for an interrupted application at the ResourceManager, a second apart.
_ABANDON_LOOKUPS = 3
#: Starts of a SparkContext whose UI lost Spark's race with the ApplicationMaster.
_UI_RACE_ATTEMPTS = 2


def start_and_wait(request: YarnRequest, spark_conf: Any, rm: ResourceManager) -> Any:
    """Start the SparkContext and wait for every executor, or kill the application.

    Parameters
    ----------
    request : YarnRequest
        The checked request (its launch tag, executors and timeout).
    spark_conf : pyspark.SparkConf
        From :func:`~zoo_ray.shipping.ship_application`.
    rm : ResourceManager
        The cluster's ResourceManager.

    Returns
    -------
    pyspark.SparkContext
        Running, with every executor registered.

    Raises
    ------
    ExecutorsNotStartedError
        YARN left the application unscheduled, or started too few executors, within
        ``request.executor_timeout``; the application was killed.
    """
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
            _wait_for_executors(sc, rm, request)
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
            with env_var("PYSPARK_PYTHON", EXECUTOR_PYTHON):
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


def _wait_for_executors(sc: Any, rm: ResourceManager, request: YarnRequest) -> None:
    """Return once every executor registered; else kill the application and say why."""
    wanted, timeout, gpus = request.num_executors, request.executor_timeout, request.executor_gpus
    if wait_until(lambda: spark_internals.registered_executors(sc) >= wanted, timeout,
                  interval=_EXECUTOR_POLL_S):
        return
    app_id = sc.applicationId
    got = spark_internals.registered_executors(sc)
    try:
        diagnostics = rm.app(app_id).get("diagnostics") or "(none)"
        why = why_not_granted(rm, app_id, request.container_mb, request.executor_cores)
    except (ZooRayError, KeyError, TypeError, ValueError) as exc:
        diagnostics, why = str(exc), "the queue's and the NodeManagers' room unknown"
    # Kill before stopping: a stopped SparkContext unregisters as FINISHED, hiding
    # from YARN's admins that the application never got its executors.
    rm.kill(app_id, diagnostics=f"zoo_ray: only {got} of {wanted} executors started in "
                                f"{timeout:.0f}s")
    sc.stop()
    raise ExecutorsNotStartedError(
        f"YARN started {got} of {wanted} executors within {timeout:.0f}s ({why}); "
        f"application {app_id} was killed. Ask for fewer or smaller executors, use "
        f"another queue, or raise executor_timeout. YARN diagnostics: {diagnostics}"
        + (f". With executor_gpus={gpus}: an executor that found fewer free GPUs on its "
           "host than YARN gave it does not start, and says why at the end of its stderr "
           "(`yarn logs -applicationId ...`; docs/gpus.md)" if gpus else "")
    )
