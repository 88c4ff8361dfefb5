"""The watch of an ApplicationMaster in the driver's process (zoo_ray.app_master_watch):
Spark's AM state stands in for a JVM, the thread and its looks are real."""
from __future__ import annotations

import time

from tests.spark_stub import StubSparkContext

from zoo_ray import app_master_watch
from zoo_ray.app_master_watch import AppMasterWatch


def _wait(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_an_application_master_that_gave_up_stops_the_spark_context(monkeypatch, caplog):
    sc, why = StubSparkContext(), [None]
    monkeypatch.setattr(app_master_watch.spark_internals, "app_master_gave_up",
                        lambda seen: why[0] if seen is sc else "another context")
    watch = AppMasterWatch(sc, poll_s=0.05).start()
    time.sleep(0.3)
    assert not sc._jsc.stopped, "an AM that runs leaves the SparkContext alone"
    why[0] = "Max number of executor failures (1) reached"
    assert _wait(lambda: sc._jsc.stopped)
    assert _wait(lambda: not watch._thread.is_alive()), "the watch ends with the context"
    assert "gave up (Max number of executor failures (1) reached)" in caplog.text
    watch.stop()
    watch.stop()


def test_the_watch_ends_when_the_context_stops_and_on_stop(monkeypatch):
    looks = []
    monkeypatch.setattr(app_master_watch.spark_internals, "app_master_gave_up",
                        lambda sc: looks.append(sc))
    stopped_by_user = StubSparkContext()
    watch = AppMasterWatch(stopped_by_user, poll_s=0.05).start()
    assert _wait(lambda: len(looks) >= 2)
    stopped_by_user.stop()  # PySpark's sc.stop(): no JVM context any more
    assert _wait(lambda: not watch._thread.is_alive())
    assert watch.look() is True

    running = StubSparkContext()
    watch = AppMasterWatch(running, poll_s=0.05).start()
    watch.stop()
    assert _wait(lambda: not watch._thread.is_alive())
    assert not running._jsc.stopped
