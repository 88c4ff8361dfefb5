"""The ApplicationMaster in the driver's process, watched while its application runs.

Runs on the gateway: a daemon thread in the driver's process, which
:func:`~zoo_ray.spark.init_spark_on_yarn` starts when Spark's ApplicationMaster runs there
(``spark.yarn.unmanagedAM.enabled``, :mod:`zoo_ray.app_master`). An AM in a container that
gives up on its executors (``spark.executor.maxNumFailures``) ends, YARN ends the
application, and Spark's client stops the SparkContext. Spark's in-driver AM only stops
asking for executors: the application and the SparkContext would go on with none, and a
program that uses only Spark would wait forever. The watch stops the SparkContext then,
as Spark does for an AM container; the AM unregisters with Spark's reason, which YARN
keeps in the application's report.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from . import spark_internals

__all__ = ["AppMasterWatch"]

logger = logging.getLogger(__name__)

#: A look every few seconds: reflection on two fields of the driver's JVM.
_POLL_S = 2.0


class AppMasterWatch:
    """Watch the ApplicationMaster of ``sc``'s application in the driver's JVM.

    Parameters
    ----------
    sc : pyspark.SparkContext
        A running SparkContext whose ApplicationMaster runs in its driver's JVM. The watch
        ends when it stops.
    poll_s : float, optional
        Seconds between looks.
    """

    def __init__(self, sc: Any, poll_s: float = _POLL_S) -> None:
        self._sc = sc
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="zoo_ray-app-master-watch",
                                        daemon=True)

    def start(self) -> AppMasterWatch:
        """Start watching.

        Returns
        -------
        AppMasterWatch
            This watch.
        """
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()

    def look(self) -> bool:
        """Look once; stop the SparkContext if its ApplicationMaster gave up.

        Returns
        -------
        bool
            Whether the watch is over: the SparkContext is stopped (by the user, by YARN,
            or by this look).
        """
        if spark_internals.is_stopped(self._sc):
            return True
        why = spark_internals.app_master_gave_up(self._sc)
        if why is None:
            return False
        logger.warning("Spark's ApplicationMaster gave up (%s): stopping the SparkContext, as "
                       "Spark does when its ApplicationMaster's container ends.", why)
        self._sc._jsc.sc().stop()
        return True

    def _watch(self) -> None:
        # Ends with the SparkContext: a long application has no bound on its looks.
        while not self._stop.wait(self._poll_s):
            try:
                if self.look():
                    return
            except Exception as exc:  # the JVM went away under the look
                logger.debug("The ApplicationMaster watch ends: %s", exc)
                return
