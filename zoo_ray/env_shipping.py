"""Shipping a Python environment to the cluster: in layers when it can be, else as one archive.

Runs on the gateway, in the driver's process (and in ``zoo-ray pack``). A conda env or a
venv is cut into layers (:mod:`zoo_ray.env_layers`) once per environment address (its
package list, Python and platform); each layer's archive is written once per host, named
by its digest, and uploaded once per cluster file system. After ``pip install`` of one
package only the layers it touched are written, uploaded and localized by the
NodeManagers; layers two environments share are shared on every NodeManager too. An
environment that layers cannot reproduce, and a prebuilt archive, ship as one archive
(:func:`zoo_ray.envs.ship_archive`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import build_once, cache_root, digest
from .env_layer_files import write_layer
from .env_layers import Fallback, Layer, LayerPlan, plan_layers
from .envs import (
    ENV_ALIAS,
    ENV_EXCLUDES,
    PythonEnv,
    editable_packages,
    ship_archive,
    upload_once,
    warn_editable,
)
from .errors import EnvLayerError
from .filesystem import ClusterFileSystem

__all__ = ["ShippedEnv", "ShippedPart", "ship_env"]

logger = logging.getLogger(__name__)

#: Layers packed and uploaded at once.
_SHIP_THREADS = 4


@dataclass(frozen=True)
class ShippedPart:
    """One archive of a shipped environment: unpacked in each container as ``link``.

    Parameters
    ----------
    link : str
        The directory YARN unpacks it into, in the container's working directory.
    remote : str
        Its URI on the cluster.
    bytes : int
        Its size (0 for a prebuilt archive only on the cluster).
    """

    link: str
    remote: str
    bytes: int

    @property
    def entry(self) -> str:
        """As ``spark.yarn.dist.archives`` takes it."""
        return f"{self.remote}#{self.link}"

    def to_dict(self) -> dict[str, Any]:
        return {"link": self.link, "remote": self.remote, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShippedPart:
        return cls(data["link"], data["remote"], int(data["bytes"]))


@dataclass(frozen=True)
class ShippedEnv:
    """An environment on the cluster: its archives, base (``zoo_env``) first.

    Parameters
    ----------
    kind : str
        "conda", "venv" or "archive".
    prefix : str
        The environment's prefix on the gateway (a prebuilt archive's path).
    parts : tuple of ShippedPart
        One archive, or its layers.
    layered : bool
        Whether ``parts`` are layers.
    """

    kind: str
    prefix: str
    parts: tuple[ShippedPart, ...]
    layered: bool

    @property
    def bytes(self) -> int:
        """All the parts' bytes."""
        return sum(part.bytes for part in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "prefix": self.prefix, "layered": self.layered,
                "bytes": self.bytes, "parts": [part.to_dict() for part in self.parts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShippedEnv:
        return cls(data["kind"], data["prefix"],
                   tuple(ShippedPart.from_dict(p) for p in data["parts"]), data["layered"])


def _plan_path(env: PythonEnv) -> Path:
    address = digest(env.location, env.fingerprint(env.describe()))
    return cache_root() / "layers" / "plans" / f"{env.kind}-{address}.json"


def _plan(env: PythonEnv, path: Path) -> LayerPlan | Fallback:
    """The environment's layers as planned before for its address, else planned now."""
    if path.is_file():
        data = json.loads(path.read_text())
        return Fallback.from_dict(data) if "reasons" in data else LayerPlan.from_dict(data)
    logger.info("Planning the layers of %s environment %s", env.kind, env.location)
    editable = editable_packages(Path(env.location))
    if editable:
        warn_editable(Path(env.location), editable)
    plan = plan_layers(Path(env.location), env.kind, exclude=ENV_EXCLUDES)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(plan.to_dict()))
    staging.replace(path)
    return plan


def _ship_layer(layer: Layer, prefix: Path, fs: ClusterFileSystem,
                remote_root: str) -> ShippedPart:
    local = cache_root() / "layers" / f"{layer.digest}.tar.gz"

    def write(staging: Path) -> None:
        logger.info("Packing the %s layer of %s (%s; %d bytes) -> %s", layer.role, prefix,
                    ", ".join(layer.dists) or "no distribution", layer.size, local)
        write_layer(layer, prefix, staging)

    build_once(local, write)
    remote = upload_once(fs, local, f"{remote_root}/layers/{local.name}",
                         {"kind": "env-layer", "role": layer.role, "dists": list(layer.dists)})
    return ShippedPart(layer.link, remote, local.stat().st_size)


def _ship_layers(plan: LayerPlan, fs: ClusterFileSystem,
                 remote_root: str) -> tuple[ShippedPart, ...]:
    """Each layer packed (unless cached) and uploaded (unless there), several at once:
    gzip uses the gateway's cores, and HDFS takes parallel streams. Largest first, so the
    big ones do not start last."""
    prefix = Path(plan.prefix)
    pool = ThreadPoolExecutor(max_workers=_SHIP_THREADS, thread_name_prefix="zoo_ray-ship")
    try:
        shipping = {layer.digest: pool.submit(_ship_layer, layer, prefix, fs, remote_root)
                    for layer in sorted(plan.layers, key=lambda layer: -layer.size)}
        return tuple(shipping[layer.digest].result() for layer in plan.layers)
    finally:
        # An error or Ctrl-C: layers not started are not; those being written finish
        # (content-addressed, so a later start finds them whole).
        pool.shutdown(wait=False, cancel_futures=True)


def _layered(env: PythonEnv, fs: ClusterFileSystem,
             remote_root: str) -> tuple[ShippedPart, ...] | None:
    """The layers of ``env`` on the cluster, or None when it ships as one archive."""
    path = _plan_path(env)
    plan = _plan(env, path)
    if isinstance(plan, LayerPlan):
        try:
            return _ship_layers(plan, fs, remote_root)
        except EnvLayerError as exc:
            # Same packages, a file edited in place: the plan's hashes are stale.
            logger.info("Planning the layers again: %s", exc)
            path.unlink(missing_ok=True)
            plan = _plan(env, path)
    return _ship_layers(plan, fs, remote_root) if isinstance(plan, LayerPlan) else None


def ship_env(env: PythonEnv, fs: ClusterFileSystem, remote_root: str) -> ShippedEnv:
    """Put ``env`` on the cluster: write and upload only what it lacks.

    Parameters
    ----------
    env : PythonEnv
    fs : ClusterFileSystem
        The cluster's file system, as the user.
    remote_root : str
        zoo_ray's cache directory on it.

    Returns
    -------
    ShippedEnv
        The archives to ship, in layers when the environment allows.
    """
    layers = _layered(env, fs, remote_root) if env.kind != "archive" else None
    if layers is not None:
        return ShippedEnv(env.kind, env.location, layers, True)
    remote, size = ship_archive(env, fs, remote_root)
    return ShippedEnv(env.kind, env.location, (ShippedPart(ENV_ALIAS, remote, size),), False)
