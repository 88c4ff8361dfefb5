"""``zoo-ray submit``: run an unchanged Ray script on YARN, the prelude applied for it.

Runs on the gateway: this process becomes the driver. It starts the Spark
application and the Ray cluster (the three lines users otherwise add), runs the
script as ``__main__`` in this very interpreter, where its own ``ray.init()`` joins
the cluster through ``RAY_ADDRESS``, and stops everything when the script ends,
fails or is interrupted. The exit code is the script's.
"""
from __future__ import annotations

import logging
import runpy
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = ["SubmitOptions", "submit"]

logger = logging.getLogger(__name__)

#: The exit code of a process ended by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


@dataclass(frozen=True)
class SubmitOptions:
    """How to size and ship the application a script runs in.

    The fields are :func:`~zoo_ray.spark.init_spark_on_yarn`'s parameters of the same
    name, plus the RayContext's ``object_store_memory``, ``min_ray_nodes``,
    ``max_ray_nodes`` and ``idle_timeout`` (an elastic cluster).
    """

    hadoop_conf: str | None = None
    num_executors: int = 2
    executor_cores: int = 2
    executor_memory: str = "2g"
    driver_memory: str = "1g"
    extra_executor_memory_for_ray: str | None = None
    object_store_memory: str | None = None
    conda_name: str | None = None
    env_prefix: str | None = None
    penv_archive: str | None = None
    queue: str | None = None
    extra_python_lib: list[str] = field(default_factory=list)
    conf: dict[str, str] = field(default_factory=dict)
    principal: str | None = None
    keytab: str | None = None
    executor_gpus: int = 0
    min_ray_nodes: int | None = None
    max_ray_nodes: int | None = None
    idle_timeout: str = "60s"


def _check_script(script: str) -> Path:
    path = Path(script).expanduser()
    if not path.is_file():
        raise InvalidArgumentError(f"No script {script!r}: pass the path of a Python file, "
                                   "like `zoo-ray submit train.py --epochs 3`.")
    return path.resolve()


def submit(script: str, args: list[str], options: SubmitOptions) -> int:
    """Start Spark and Ray on YARN, run ``script`` with ``args``, stop both.

    Parameters
    ----------
    script : str
        Path of the Python script, run as ``__main__``.
    args : list of str
        Its command-line arguments (``sys.argv[1:]`` inside it).
    options : SubmitOptions
        The application's size, environment and queue.

    Returns
    -------
    int
        The script's exit code: 0, its ``sys.exit`` code, 1 when it raised, or
        130 when interrupted.
    """
    path = _check_script(script)
    from .context import RayContext
    from .options import scale_range
    from .spark import init_spark_on_yarn

    # Before anything starts (RayContext checks them again, with Spark's conf).
    scale_range(options.min_ray_nodes, options.max_ray_nodes, options.idle_timeout)

    sc = init_spark_on_yarn(
        hadoop_conf=options.hadoop_conf, conda_name=options.conda_name,
        env_prefix=options.env_prefix, penv_archive=options.penv_archive,
        num_executors=options.num_executors, executor_cores=options.executor_cores,
        executor_memory=options.executor_memory, driver_memory=options.driver_memory,
        extra_executor_memory_for_ray=options.extra_executor_memory_for_ray,
        extra_python_lib=options.extra_python_lib, conf=options.conf, queue=options.queue,
        app_name=f"zoo-ray submit {path.name}", principal=options.principal,
        keytab=options.keytab, executor_gpus=options.executor_gpus,
    )
    try:
        ray_ctx = RayContext(sc, object_store_memory=options.object_store_memory,
                             min_ray_nodes=options.min_ray_nodes,
                             max_ray_nodes=options.max_ray_nodes,
                             idle_timeout=options.idle_timeout)
        ray_ctx.init()
        try:
            logger.info("Running %s in application %s", path, sc.applicationId)
            return run_script(path, args)
        finally:
            with _uninterruptible():
                ray_ctx.stop()
    finally:
        with _uninterruptible():
            sc.stop()


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Let a cleanup finish: a second Ctrl-C while the application stops would leave
    part of it running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_script(path: Path, args: list[str]) -> int:
    """Run ``path`` as ``__main__`` with ``args``; its exit code (see :func:`submit`).

    ``KeyboardInterrupt`` propagates, so the caller cleans up before exiting.
    """
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.parent))  # as `python script.py` would
    try:
        runpy.run_path(str(path), run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        raise
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _exit_code(code: object) -> int:
    """What the interpreter would exit with for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
