"""Analytics Zoo's attribute names on RayContext (runs on the driver).

Programs written for Zoo's RayContext read these; each is spelled in terms of
zoo_ray's own attributes, and the renamed ones warn once naming the new spelling.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .compat import warn_renamed

if TYPE_CHECKING:
    from .options import RayOptions

__all__ = ["ZooAttributes"]


class _Context(Protocol):
    options: RayOptions

    @property
    def address(self) -> str | None: ...

    @property
    def initialized(self) -> bool: ...

    def stop(self) -> None: ...


class ZooAttributes:
    """Analytics Zoo's attributes, for a class with ``options``, ``address``,
    ``initialized`` and ``stop()`` (RayContext)."""

    @property
    def is_local(self: _Context) -> bool:
        """Whether Spark runs in local mode (Analytics Zoo's attribute)."""
        return self.options.is_local

    @property
    def num_ray_nodes(self: _Context) -> int:
        """Executor nodes the cluster keeps (Analytics Zoo's attribute)."""
        return self.options.num_ray_nodes

    @property
    def ray_node_cpu_cores(self: _Context) -> int:
        """CPUs each executor node offers to Ray (Analytics Zoo's attribute)."""
        return self.options.ray_node_cpu_cores

    @property
    def object_store_memory(self: _Context) -> int | None:
        """Bytes of each executor node's object store; None: Ray's default."""
        return self.options.object_store_memory

    @property
    def env(self: _Context) -> dict[str, str]:
        """Extra environment variables of the Ray processes."""
        return dict(self.options.env)

    @property
    def extra_params(self: _Context) -> dict[str, object]:
        """Extra ``ray start`` flags."""
        return dict(self.options.extra_params)

    @property
    def include_webui(self: _Context) -> bool:
        """Whether the head serves Ray's dashboard."""
        return self.options.include_webui

    @property
    def verbose(self: _Context) -> bool:
        """Whether every node's start is logged and Ray workers' output shown."""
        return self.options.verbose

    @property
    def total_cores(self: _Context) -> int:
        """CPUs of the executors' Ray nodes together (Analytics Zoo's attribute)."""
        return self.options.num_ray_nodes * self.options.ray_node_cpu_cores

    @property
    def redis_address(self: _Context) -> str | None:
        """Analytics Zoo's name of :attr:`~zoo_ray.context.RayContext.address` (Ray 2.60 has
        no Redis)."""
        warn_renamed("RayContext.redis_address", "RayContext.address")
        return self.address

    @property
    def stopped(self: _Context) -> bool:
        """Analytics Zoo 0.6-0.8's name of ``not initialized``."""
        warn_renamed("RayContext.stopped", "not RayContext.initialized")
        return not self.initialized

    def purge(self: _Context) -> None:
        """Analytics Zoo's harder stop: :meth:`~zoo_ray.context.RayContext.stop` already
        removes every Ray process."""
        warn_renamed("RayContext.purge()", "RayContext.stop()")
        self.stop()
