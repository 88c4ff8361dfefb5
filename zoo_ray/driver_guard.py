"""The driver's guards on its Ray connection, through Ray internals (runs on the driver).

Each call here uses an API Ray does not promise to keep; setup.py pins the Ray
minor versions they were checked against, and the end-to-end tests exercise each.

- :func:`object_store_used`: one node's object store usage, from its raylet.
- :func:`attach_drivers_to`: which raylet a ``ray.init()`` in this process attaches to.
- :func:`refuse_drivers`: a ``ray.init()`` in this process (Ray's auto-connect included)
  to a cluster that is gone raises a :class:`~zoo_ray.errors.ClusterLostError` saying why.
- :func:`watch_driver_calls` and :func:`cluster_lost`: when the driver's cluster is lost,
  ``ray.get`` calls waiting in any thread, and new Ray calls until the driver is
  disconnected, raise :class:`~zoo_ray.errors.ClusterLostError`.
- :func:`node_table`: the cluster's nodes, as ``ray.nodes()`` lists them, without
  waiting for ever on a GCS that is gone.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import ray
from ray._private import auto_init_hook, services
from ray._private.function_manager import FunctionActorManager
from ray._private.state import GlobalState
from ray._private.worker import Worker, global_worker
from ray.core.generated import gcs_pb2

from .host import wait_until

__all__ = ["attach_drivers_to", "cluster_lost", "disconnect", "node_table", "object_store_used",
           "refuse_drivers", "watch_driver_calls"]

logger = logging.getLogger(__name__)


def object_store_used(raylet_address: str) -> int:
    """Bytes in use in the object store of the raylet at ``ip:port``."""
    from ray._private.internal_api import node_stats

    ip, port = raylet_address.rsplit(":", 1)
    stats = node_stats(ip, int(port), include_memory_info=False)
    return int(stats.store_stats.object_store_bytes_used)


_attach_to: list[str] = []
_find_node: Any = services.get_node_to_connect_for_driver


def _node_for_driver(gcs_client: Any, node_ip_address: str | None = None,
                     node_name: str | None = None, temp_dir: str | None = None,
                     **kwargs: Any) -> Any:
    if _attach_to and node_ip_address is None and node_name is None and temp_dir is None:
        temp_dir = _attach_to[0]
    return _find_node(gcs_client, node_ip_address, node_name, temp_dir, **kwargs)


def attach_drivers_to(temp_dir: str | None) -> None:
    """Make ``ray.init()`` in this process attach to the node with ``temp_dir`` (None: Ray's
    own choice again).

    Ray attaches a driver to any raylet it finds among the machine's processes and
    prefers the head's. On a gateway that also runs executors (or the local Hadoop,
    where every host shares one process table) that can be an executor's raylet,
    in another network namespace. A ``ray.init()`` that names a node itself is left alone.
    """
    _attach_to[:] = [temp_dir] if temp_dir else []
    services.get_node_to_connect_for_driver = _node_for_driver  # type: ignore[assignment]


_refused: dict[str, str] = {}
_canonical_address: Any = services.canonicalize_bootstrap_address


def _address_for_driver(addr: str | None, temp_dir: str | None = None) -> str | None:
    address = _canonical_address(addr, temp_dir)
    if address in _refused:
        from .errors import ClusterLostError

        raise ClusterLostError(_refused[address])
    return address


def refuse_drivers(address: str, why: str | None) -> None:
    """Make ``ray.init()`` in this process to the cluster at ``address`` raise
    :class:`~zoo_ray.errors.ClusterLostError` with ``why`` (None: allow it again).

    Ray's own error for a cluster that is gone comes after 20 s of retries and says
    nothing of the cause; the user's next Ray call goes through ``ray.init()`` (Ray's
    auto-connect), so this is where it learns why.
    """
    if why is None:
        _refused.pop(address, None)
    else:
        _refused[address] = why
    services.canonicalize_bootstrap_address = _address_for_driver


@dataclass(frozen=True)
class _Lost:
    """Why the driver's cluster is gone, told to ``ray.get`` calls waiting on it
    (``waited``) and to new Ray calls (``why``); ``owner`` is the thread disconnecting."""

    why: str
    waited: str
    owner: int


#: Set while the driver is being disconnected from a lost cluster (one read per use).
_lost: _Lost | None = None
_get_objects: Any = Worker.get_objects
_auto_init: Any = auto_init_hook.auto_init_ray
#: How long one wait inside a ``ray.get`` lasts before it looks at ``_lost`` again.
_SLICE_S = 1.0


def _raise_if_lost(waited: bool) -> None:
    """Raise ClusterLostError when the cluster is lost, unless this thread disconnects it;
    ``waited``: say the call was already waiting on it."""
    lost = _lost
    if lost is not None and lost.owner != threading.get_ident():
        from .errors import ClusterLostError

        raise ClusterLostError(lost.waited if waited else lost.why)


def _get_objects_or_lost(self: Worker, object_refs: list[Any], timeout: float | None = None,
                         *args: Any, **kwargs: Any) -> Any:
    forever = timeout is None or timeout == -1
    deadline = 0.0 if forever else time.monotonic() + float(timeout)  # type: ignore[arg-type]
    while True:
        _raise_if_lost(waited=True)
        left = _SLICE_S if forever else max(0.0, deadline - time.monotonic())
        try:
            return _get_objects(self, object_refs, min(_SLICE_S, left), *args, **kwargs)
        except ray.exceptions.GetTimeoutError:
            if not forever and left <= _SLICE_S:
                raise


def _auto_init_unless_lost() -> None:
    _raise_if_lost(waited=False)
    _auto_init()


#: gRPC codes of a GCS that did not answer in time (DEADLINE_EXCEEDED, UNAVAILABLE).
_NO_ANSWER = (4, 14)
_T = TypeVar("_T")
_ALIVE: int = gcs_pb2.GcsNodeInfo.ALIVE  # type: ignore[attr-defined]  # generated, no stubs


def _ask_gcs(ask: Callable[[Any, float], _T], timeout: float | None) -> _T:
    """``ask(gcs_client, seconds)`` of the driver's GCS in slices of about a second until
    it answers, raising ClusterLostError in between once :func:`cluster_lost` says the
    cluster is gone, and RaySystemError once Ray was shut down in this process."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        _raise_if_lost(waited=False)
        client = getattr(global_worker, "gcs_client", None)  # ray.shutdown() deletes it
        if client is None or not global_worker.connected:
            raise ray.exceptions.RaySystemError(
                "Ray was shut down in this process while the call waited on its GCS")
        began = time.monotonic()
        left = _SLICE_S if deadline is None else deadline - began
        try:
            # Above 0: Ray's GCS client takes a timeout of 0 as none.
            return ask(client, max(0.1, min(_SLICE_S, left)))
        except ray.exceptions.RpcError as exc:
            if exc.rpc_code not in _NO_ANSWER or (
                    deadline is not None and time.monotonic() >= deadline):
                raise
        # A refusal at once (UNAVAILABLE) must not make this spin.
        time.sleep(max(0.0, _SLICE_S - (time.monotonic() - began)))


def node_table(timeout: float | None = None) -> list[dict[str, Any]]:
    """Every node of the driver's cluster, with the keys of ``ray.nodes()`` zoo_ray reads:
    ``NodeID``, ``Alive``, ``NodeManagerAddress``, ``NodeManagerPort``,
    ``ObjectStoreSocketName``, ``Resources`` (empty for a dead node, as there).

    ``ray.nodes()`` waits on a GCS that is gone until Ray ends the process. This asks
    the GCS in slices of about a second and, in between, raises
    :class:`~zoo_ray.errors.ClusterLostError` once :func:`cluster_lost` says the
    cluster is gone. The driver connects first, as on any Ray call.

    Parameters
    ----------
    timeout : float, optional
        Seconds to wait for the GCS to answer; None waits until it does or the
        cluster is lost.

    Raises
    ------
    ray.exceptions.RpcError
        The GCS did not answer within ``timeout``.
    ClusterLostError
        The cluster was lost meanwhile (or before, as for every Ray call).
    ray.exceptions.RaySystemError
        Ray was shut down in this process meanwhile (``stop()``).
    """
    auto_init_hook.auto_init_ray()
    if not ray.is_initialized():  # Ray's auto-connect is off (RAY_ENABLE_AUTO_CONNECT=0)
        ray.init(logging_level=logging.WARNING)
    infos = _ask_gcs(lambda client, seconds: client.get_all_node_info(timeout=seconds),
                     timeout)
    return [_node_row(node_id.hex(), info) for node_id, info in infos.items()]


def _node_row(node_id: str, info: Any) -> dict[str, Any]:
    alive = info.state == _ALIVE
    return {"NodeID": node_id, "Alive": alive,
            "NodeManagerAddress": info.node_manager_address,
            "NodeManagerPort": info.node_manager_port,
            "ObjectStoreSocketName": info.object_store_socket_name,
            "Resources": dict(info.resources_total) if alive else {}}


def _once_gcs_answers(call: Callable[..., _T]) -> Callable[..., _T]:
    """Ray's ``call``, made once the connected driver's GCS answers a key lookup."""
    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> _T:
        if global_worker.connected:
            # Shut down meanwhile: Ray's own call then says what it says unconnected.
            with contextlib.suppress(ray.exceptions.RaySystemError):
                _ask_gcs(lambda client, seconds: client.internal_kv_exists(
                    b"zoo_ray", b"zoo_ray", timeout=seconds), None)
        return call(*args, **kwargs)
    return wrapped


#: Ray's calls that wait on the GCS without a timeout: state calls such as ray.nodes(),
#: and the first .remote() of a function or actor class, which registers it.
_GCS_CALLS = [(owner, name, _once_gcs_answers(getattr(owner, name))) for owner, name in (
    (GlobalState, "_connect_and_get_accessor"), (FunctionActorManager, "export"),
    (FunctionActorManager, "export_actor_class"))]


def watch_driver_calls() -> None:
    """Let :func:`cluster_lost` reach this process's Ray calls (idempotent).

    A ``ray.get`` then waits in slices of a second, looking in between whether its
    cluster was lost; every Ray call that runs Ray's auto-connect hook first (``get``,
    ``put``, ``wait``, ``remote`` of tasks and actors, ``kill``, ``cancel``,
    ``get_actor``; not ``init``) is refused there; and the calls that wait on the GCS
    without a timeout (state calls such as ``ray.nodes()``, and the first ``.remote()``
    of a function or actor class, which registers it) first wait, in slices, for the
    GCS to answer a key lookup, so that a GCS lost just before stops them there. A call
    already past that lookup when the GCS goes is left to Ray.
    """
    Worker.get_objects = _get_objects_or_lost  # type: ignore[method-assign]
    auto_init_hook.auto_init_ray = _auto_init_unless_lost
    for owner, name, wrapped in _GCS_CALLS:
        setattr(owner, name, wrapped)


def _waiting_calls() -> int:
    """How many threads but this one wait inside a ``ray.get`` or on the GCS."""
    me, waiting = threading.get_ident(), 0
    waits = (_get_objects_or_lost.__code__, _ask_gcs.__code__)
    for thread_id, top in sys._current_frames().items():
        frame: FrameType | None = top
        while frame is not None and thread_id != me:
            if frame.f_code in waits:
                waiting += 1
                break
            frame = frame.f_back
    return waiting


@contextlib.contextmanager
def cluster_lost(why: str, waited: str, timeout: float) -> Iterator[int]:
    """While this runs, the driver's cluster is gone: disconnect it inside.

    A ``ray.get`` waiting in any thread raises :class:`~zoo_ray.errors.ClusterLostError`
    with ``waited`` within a second, a call waiting for the GCS to answer (see
    :func:`watch_driver_calls`, :func:`node_table`) with ``why``, and every
    new Ray call (see :func:`watch_driver_calls`) raises it with ``why`` before it
    reaches Ray; the calling thread's own calls pass. Disconnecting
    (``ray.shutdown()``) under a waiting call would leave it blocked for good, and a
    call that reaches a GCS that is gone blocks inside Ray until Ray ends the process
    (``gcs_rpc_server_reconnect_timeout_s``).

    Parameters
    ----------
    why, waited : str
        What new calls and waiting ``ray.get`` calls are told.
    timeout : float
        Seconds to wait for the waiting calls to end before going on.

    Yields
    ------
    int
        How many ``ray.get`` calls and calls on the GCS were waiting (and ended,
        unless still counted after ``timeout``).
    """
    global _lost
    waiting = _waiting_calls()
    _lost = _Lost(why, waited, threading.get_ident())
    try:
        wait_until(lambda: _waiting_calls() == 0, timeout, interval=0.1)
        yield waiting
    finally:
        _lost = None


def disconnect(why: str, waited: str) -> None:
    """Disconnect the driver from a cluster that is gone, inside :func:`cluster_lost`.

    Parameters
    ----------
    why, waited : str
        What the program's new Ray calls, and the ``ray.get`` calls waiting in its
        threads, raise as :class:`~zoo_ray.errors.ClusterLostError` meanwhile.
    """
    with cluster_lost(why, waited, timeout=10.0) as waiting:
        if waiting:
            logger.info("%d Ray calls waiting on the lost cluster raise ClusterLostError",
                        waiting)
        if ray.is_initialized():
            ray.shutdown()
