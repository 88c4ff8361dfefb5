"""Watching a YARN application come up while Spark's client blocks the driver.

Runs on the gateway, in a thread of the driver's process, while ``SparkContext(...)``
waits for YARN to start the ApplicationMaster, and zoo_ray then for the executors. Spark says
nothing during that wait (a first run on a cluster can take minutes while the
NodeManagers localise the environment and Spark's jars) and never gives up on an
application the scheduler leaves in ACCEPTED. The watcher finds the application by
its launch tag, shows its state and how many executors run, and kills it when it
stays unscheduled longer than the caller's timeout.
"""
from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from .errors import ZooRayError
from .progress import count_bar, interactive
from .yarn import FINAL_STATES, ResourceManager

__all__ = ["StartupWatch", "find_tagged"]

logger = logging.getLogger(__name__)

#: States in which YARN has not started the ApplicationMaster yet.
_WAITING = frozenset({"NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED"})
_POLL_S = 1.0
#: Said while executors are awaited: the slow part of a first run.
_FIRST_RUN = "a first run localises the archives on each NodeManager"


def find_tagged(rm: ResourceManager, tag: str) -> dict[str, Any] | None:
    """The newest application carrying the YARN tag ``tag``, or None (YARN lower-cases
    tags; a start repeated after Spark's UI race leaves an older one, killed)."""
    tagged = [app for app in rm.apps(tag=tag.lower())
              if tag.lower() in (app.get("applicationTags") or "").split(",")]
    return max(tagged, key=lambda app: app.get("startedTime", 0), default=None)


class StartupWatch:
    """Follow the application tagged ``tag`` until :meth:`close` (a context manager).

    Parameters
    ----------
    rm : ResourceManager
        The cluster's ResourceManager.
    tag : str
        The application's unique YARN tag (YARN stores tags in lower case).
    executors : int
        How many executors were asked for.
    timeout : float
        Seconds the application may stay unscheduled (not RUNNING) before it is killed.
    """

    def __init__(self, rm: ResourceManager, tag: str, executors: int, timeout: float) -> None:
        self.rm = rm
        self.tag = tag.lower()
        self.executors = executors
        self.timeout = timeout
        #: The application's last report, once YARN knows it.
        self.app: dict[str, Any] | None = None
        #: Set when the watcher killed the application for staying unscheduled.
        self.killed_unscheduled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoo_ray-startup-watch",
                                        daemon=True)
        self._bar: Any = None
        self._state = ""

    def __enter__(self) -> StartupWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _run(self) -> None:
        seen_at: float | None = None  # the timeout runs from YARN's first sight of it
        while not self._stop.wait(_POLL_S):
            try:
                app = find_tagged(self.rm, self.tag)
            except Exception as exc:  # a ResourceManager hiccup: look again
                logger.debug("Startup watch: %s", exc)
                continue
            if app is None:
                continue
            seen_at = seen_at if seen_at is not None else time.monotonic()
            self.app = app
            self._show(app)
            if app["state"] in FINAL_STATES:
                return
            if app["state"] in _WAITING and time.monotonic() - seen_at > self.timeout:
                self._kill_unscheduled(app)
                if self.killed_unscheduled:
                    return

    def _show(self, app: dict[str, Any]) -> None:
        am = 0 if app.get("unmanagedApplication") else 1  # an unmanaged AM has no container
        running = max(0, int(app.get("runningContainers") or 0) - am)
        state = app["state"]
        if state != self._state:
            self._state = state
            logger.info("YARN application %s is %s%s", app["id"], state,
                        f" ({_FIRST_RUN})" if state == "RUNNING" else "")
        if not interactive():
            return
        if self._bar is None:
            self._bar = count_bar(self.executors, "", "executor")
        self._bar.set_description(f"{app['id']} {state}", refresh=False)
        self._bar.set_postfix_str(
            _FIRST_RUN if state == "RUNNING" else str(app.get("diagnostics") or "")[:60],
            refresh=False)
        self._bar.n = min(running, self.executors)
        self._bar.refresh()

    def _kill_unscheduled(self, app: dict[str, Any]) -> None:
        """Kill the application unless it got scheduled meanwhile; the caller retries
        on the next look if the ResourceManager could not be reached."""
        try:
            fresh = self.rm.app(app["id"])
            if fresh["state"] not in _WAITING:
                return
            logger.warning("YARN left application %s %s for %.0fs; killing it", app["id"],
                           fresh["state"], self.timeout)
            self.rm.kill(app["id"], diagnostics=f"zoo_ray: not scheduled within "
                                                f"{self.timeout:.0f}s")
            self.app = fresh
            self.killed_unscheduled = True
        except ZooRayError as exc:
            logger.warning("Could not kill %s yet: %s", app["id"], exc)
