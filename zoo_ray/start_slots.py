"""Start slots: how many of a user's Ray nodes start at once on one host.

Runs in a RayManager (:mod:`zoo_ray.manager`), beside Ray, on an executor's host or on
the gateway, around each start of its node.

A Ray node's start is a burst of CPU: ``ray start``, the raylet, Ray's dashboard agent,
its runtime-env agent and its log monitor each import Ray at once (about 5 CPU seconds
in all). The raylet gives the dashboard agent 15 s to write its port file and aborts
otherwise: Ray 2.60 waits for that file whatever port it was given, and the time is not
configurable. Many nodes starting together on a small host (several applications'
executors) leave every agent short of CPU, and every node fails its start together, its
retries too. So a node starts in a slot: at most as many
of one user's nodes start at once on a host as it has CPUs; the others wait their turn.

A slot is an ``flock`` on one of the files of a directory of the user's own
(:func:`slots_dir`), so the kernel frees it when its holder dies: a killed manager never
keeps one. Slots are per user: where YARN runs containers as another user than the
gateway's (no Kerberos, the DefaultContainerExecutor), the gateway's node takes its turn
apart from the executors'. The wait is bounded: past its patience a start goes ahead
without a slot, as it would without this module, and says so in the manager's log.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .host import private_dir_problem

__all__ = ["SLOTS_DIR_ENV", "slot_count", "slots_dir", "start_slot"]

logger = logging.getLogger("zoo_ray.start_slots")

#: Names the slots directory where the containers' ``/tmp`` is not the host's.
SLOTS_DIR_ENV = "ZOO_RAY_START_SLOTS_DIR"

#: How often a waiting start looks for a free slot.
_POLL_S = 0.2


def slots_dir() -> Path:
    """This user's slots directory on this host: :data:`SLOTS_DIR_ENV`, or
    ``/tmp/zoo-ray-starts-<uid>``."""
    return Path(os.environ.get(SLOTS_DIR_ENV) or f"/tmp/zoo-ray-starts-{os.getuid()}")


def slot_count() -> int:
    """Slots per host: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _private_dir(directory: Path) -> Path | None:
    """``directory``, made if new; None if it is not a directory of this user's alone
    (another user could hold its locks, or plant links where they are opened)."""
    try:
        problem = private_dir_problem(directory)
    except OSError as exc:
        logger.warning("no start slots: cannot make %s (%s)", directory, exc)
        return None
    if problem:
        logger.warning("no start slots: %s %s; remove it, or set %s", directory, problem,
                       SLOTS_DIR_ENV)
        return None
    return directory


def _take(directory: Path, slots: int) -> int | None:
    """An open descriptor holding a free slot's lock, or None if all are taken."""
    for number in range(slots):
        fd = os.open(directory / f"slot-{number}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
        except BaseException:
            os.close(fd)
            raise
    return None


@contextmanager
def start_slot(patience: float, give_up: Callable[[], bool] = lambda: False,
               slots: int | None = None, directory: Path | None = None) -> Iterator[bool]:
    """Hold one of this host's start slots for the block; wait at most ``patience``
    seconds for one.

    Parameters
    ----------
    patience : float
        Seconds to wait for a free slot before going ahead without one.
    give_up : callable, optional
        Asked while waiting; True ends the wait (the manager is stopping, or the process
        its node serves is gone): the block runs without a slot, and should not start.
    slots : int, optional
        Slots on this host (:func:`slot_count` by default).
    directory : Path, optional
        Where the slots' files are (:func:`slots_dir` by default).

    Yields
    ------
    bool
        Whether the block holds a slot.
    """
    where = _private_dir(directory or slots_dir())
    count = slots or slot_count()
    fd = None
    if where is not None:
        started = time.monotonic()
        deadline = started + patience
        while True:
            try:
                fd = _take(where, count)
            except OSError as exc:
                logger.warning("no start slot: cannot lock a slot in %s (%s)", where, exc)
                break
            if fd is not None:
                waited = time.monotonic() - started
                if waited >= 1.0:
                    logger.info("waited %.1fs for a start slot (%d on this host)", waited,
                                count)
                break
            if give_up():
                break
            if time.monotonic() >= deadline:
                logger.warning("starting without a start slot after %.0fs: %d node(s) of "
                               "this user were starting on this host", patience, count)
                break
            time.sleep(_POLL_S)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)
