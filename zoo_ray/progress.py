"""Progress bars for long steps, in a terminal and in Jupyter.

Runs on the gateway, in the driver's process: packing and uploading the
environment (bytes), YARN starting the application (:mod:`zoo_ray.startup`),
and the Spark job that starts the Ray nodes (:class:`JobProgress`). Nothing is
shown when stderr is neither a terminal nor a notebook, so CI logs stay clean.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
from types import TracebackType
from typing import Any

from tqdm.std import tqdm as text_tqdm

__all__ = ["JobProgress", "bar", "count_bar", "interactive", "progress_bar"]

_JOB_POLL_S = 0.5


def _in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (not merely one that imported ipykernel,
    as a test runner driving notebooks does)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive() -> bool:
    """Whether progress should be shown: in Jupyter, or with a terminal on stderr."""
    # Jupyter's stderr is not a TTY, yet it renders bars; a CI log should not get them.
    return _in_kernel() or sys.stderr.isatty()


def bar(**kwargs: Any) -> Any:
    """A tqdm bar: a widget in Jupyter when ipywidgets is installed, else text; silent
    when not interactive. ``kwargs`` go to tqdm."""
    kind: Any = text_tqdm
    # Without ipywidgets, text bars: Jupyter renders their carriage returns in place.
    if _in_kernel() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm import notebook

        kind = notebook.tqdm
    return kind(disable=not interactive(), leave=False, **kwargs)


def progress_bar(total: int, label: str) -> Any:
    """A byte-counting bar (a context manager with ``update(n)``); silent when not interactive."""
    return bar(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024)


def count_bar(total: int, label: str, unit: str) -> Any:
    """A bar counting ``unit``s up to ``total``; silent when not interactive."""
    return bar(total=total, desc=label, unit=unit)


class JobProgress:
    """Count the finished tasks of the Spark jobs of job group ``group`` on a bar.

    A context manager: a thread reads Spark's status tracker while the caller's
    thread waits for the job (the job must run in ``group``, see
    ``SparkContext.setJobGroup``).
    """

    def __init__(self, sc: Any, group: str, total: int, label: str, unit: str) -> None:
        self.sc = sc
        self.group = group
        self._bar = count_bar(total, label, unit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoo_ray-job-progress",
                                        daemon=True)

    def __enter__(self) -> JobProgress:
        if not self._bar.disable:
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._bar.close()

    def _done(self) -> int:
        tracker = self.sc.statusTracker()
        done = 0
        for job_id in tracker.getJobIdsForGroup(self.group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else []:
                stage = tracker.getStageInfo(stage_id)
                done += stage.numCompletedTasks if stage else 0
        return done

    def _run(self) -> None:
        while not self._stop.wait(_JOB_POLL_S):
            try:
                self._bar.n = min(self._done(), self._bar.total)
                self._bar.refresh()
            except Exception:  # the context is stopping: stop showing
                return
