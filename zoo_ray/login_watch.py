"""A ticket-cache login, watched while its application runs.

Runs on the gateway: a daemon thread in the driver's process, which
:func:`~zoo_ray.spark.init_spark_on_yarn` starts on a secure cluster when the user logged
in with ``kinit`` (a keytab login gets new tickets by itself). Hadoop's login in Spark's
driver renews a renewable ticket (``kinit -R``) until its renewable life ends. After that
Spark can fetch no new delegation tokens, and once the application's tokens end, HDFS and
YARN refuse them: the next Spark call that touches HDFS fails with a Java stack. The watch
wakes when the ticket ends, and says so once, with the fix, if it was not renewed.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import KerberosError
from .spnego import credential_lifetime

__all__ = ["LoginWatch"]

logger = logging.getLogger(__name__)

#: After the ticket's end, so that a renewal made just before it is seen.
_GRACE_S = 2.0
#: A ticket comes back once per renewal: a ten-hour one renewed for a week, 17 times; a
#: one-minute one, 10,080 times. Bounded all the same.
_MAX_CHECKS = 100_000
#: A second look before saying it expired: a cache is empty while `kinit -R` rewrites it.
_AGAIN_S = 5.0


class LoginWatch:
    """Watch the ticket cache's ticket of a running application.

    Parameters
    ----------
    ends_at : float
        When the ticket ends, in seconds since the epoch
        (:attr:`zoo_ray.kerberos.Login.ends_at`).
    running : callable
        Whether the application still runs; the watch ends when it does not.
    """

    def __init__(self, ends_at: float, running: Callable[[], bool]) -> None:
        self._ends_at = ends_at
        self._running = running
        self._stop = threading.Event()
        self._expired = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="zoo_ray-login-watch",
                                        daemon=True)

    @property
    def expired(self) -> bool:
        """Whether the ticket expired without a renewal (said once, as an error)."""
        return self._expired.is_set()

    def start(self) -> LoginWatch:
        """Start watching.

        Returns
        -------
        LoginWatch
            This watch.
        """
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()

    def _watch(self) -> None:
        wait = max(0.0, self._ends_at - time.time())
        for _ in range(_MAX_CHECKS):
            if self._stop.wait(wait + _GRACE_S) or not self._running():
                return
            try:
                wait = max(1.0, float(_lifetime_seen_twice(self._stop)))
            except KerberosError as exc:
                logger.error(
                    "Your Kerberos ticket expired (seen at %s) and was not renewed (it was not "
                    "renewable, or its renewable life is over): Spark can fetch no new "
                    "delegation tokens for this application, and HDFS and YARN refuse its "
                    "tokens once they end (InvalidToken: Token has expired). Start it again "
                    "after `kinit` with a renewable ticket (`kinit -r 7d`), or with "
                    "principal= and keytab= (zoo-ray submit --principal --keytab). %s",
                    time.strftime("%Y-%m-%d %H:%M:%S %Z"), exc)
                self._expired.set()  # after the log: whoever sees it set finds the message
                return


def _lifetime_seen_twice(stop: threading.Event) -> int:
    """The ticket's seconds left; a KerberosError only if a second look, a few seconds
    later, finds no valid ticket either."""
    try:
        return credential_lifetime()
    except KerberosError:
        if stop.wait(_AGAIN_S):
            return 0
        return credential_lifetime()
