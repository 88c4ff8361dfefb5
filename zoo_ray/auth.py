"""Ray token authentication for the driver, and how long it waits for a lost GCS (runs in
the driver's process, on the gateway).

Ray reads ``RAY_AUTH_MODE`` when ``ray`` is first imported, and the token from
``RAY_AUTH_TOKEN_PATH`` when it first connects. When a RayContext starts, zoo_ray
points both at a private per-process token file holding the cluster's token and
makes an already imported Ray re-read its configuration, so the order of
``import ray`` and ``import zoo_ray`` does not matter. When it stops, both
variables go again, so a later ``ray.init()`` of the program's own behaves as
without zoo_ray. The token never appears in the environment, on a command line
or in a log.

The same goes for ``RAY_gcs_rpc_server_reconnect_timeout_s``: Ray aborts a driver
that cannot reach its GCS for that long (60 s by default). zoo_ray gives the driver
(and the gateway's node it attaches to) :data:`DRIVER_GCS_WAIT_S`, longer than Spark takes
to declare an unreachable executor lost (``spark.network.timeout``, 120 s), so that a
head cut off by the network is handled as a lost executor (a new cluster) instead of
killing the user's interpreter. A value the user set is kept.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from .errors import RayContextError
from .host import write_private
from .leftovers import driver_tag, driver_token_dir

__all__ = ["DRIVER_GCS_WAIT_S", "GCS_WAIT_ENV", "clear_driver_token", "driver_token_path",
           "use_token_file", "write_driver_token"]

_MODE, _PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"
GCS_WAIT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
DRIVER_GCS_WAIT_S = 300
#: The variables zoo_ray set in this process's environment, unset again by clear_driver_token.
_set_by_us: list[str] = []


def driver_token_path() -> Path:
    """This process's private token file (its directory is 0700)."""
    return driver_token_dir() / f"driver-{driver_tag()}.token"


def _claim_env() -> Path:
    """Point Ray's mode and token path at this process's token file (noting what changed).

    Raises
    ------
    RayContextError
        The environment names another mode or token file.
    """
    path = driver_token_path()
    mode = os.environ.get(_MODE, "token")
    given = os.environ.get(_PATH)
    # Unset, or inherited from a parent zoo_ray driver: this process gets its own file.
    if given is None or Path(given).parent == path.parent:
        given = str(path)
    if mode.lower() != "token" or given != str(path):
        raise RayContextError(
            f"zoo_ray's Ray clusters require token authentication, but this process has "
            f"{_MODE}={os.environ.get(_MODE)!r} and {_PATH}={os.environ.get(_PATH)!r}. Unset "
            "both before starting Python and let zoo_ray set them."
        )
    wait = os.environ.get(GCS_WAIT_ENV, str(DRIVER_GCS_WAIT_S))
    for key, value in ((_MODE, mode), (_PATH, given), (GCS_WAIT_ENV, wait)):
        if os.environ.get(key) != value:
            os.environ[key] = value
            _set_by_us.append(key)
    return path


def write_driver_token(token: str) -> None:
    """Make ``token`` the one this process presents to Ray.

    A Ray imported before zoo_ray read ``RAY_AUTH_MODE`` at its import, before
    zoo_ray set it; re-reading its configuration from the environment switches it
    to token authentication, as long as this process has not connected yet.

    Raises
    ------
    RayContextError
        When Ray in this process cannot use zoo_ray's token: the environment names
        another mode or token file, or this process is connected to a Ray cluster of
        its own.
    """
    if "ray" in sys.modules:
        _refuse_if_connected()
    path = _claim_env()
    write_private(path, token)
    _reload_ray_config()


def use_token_file(path: Path) -> None:
    """Authenticate this process to Ray with the token in ``path`` (an executor's own file).

    For a short-lived driver inside an executor, which may have imported Ray already.
    """
    os.environ[_MODE] = "token"
    os.environ[_PATH] = str(path)
    _reload_ray_config()


def _reload_ray_config() -> None:
    """Make an imported Ray re-read its mode and token from the environment."""
    if "ray" in sys.modules:
        raylet = _raylet()
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()


def _refuse_if_connected() -> None:
    import ray

    if ray.is_initialized():
        raise RayContextError(
            "This process is already connected to a Ray cluster of its own (`ray.init()` ran "
            "before RayContext.init()). Call `ray.shutdown()` first: RayContext.init() then "
            "connects it to the cluster in the executors.")


def clear_driver_token() -> None:
    """Forget the token and give Ray back the environment it had (after ``ray.shutdown()``).

    A later ``ray.init()`` of the program's own then starts or joins clusters as
    it would have without zoo_ray.
    """
    driver_token_path().unlink(missing_ok=True)
    while _set_by_us:
        os.environ.pop(_set_by_us.pop(), None)
    _reload_ray_config()


def _raylet() -> Any:
    """Ray's compiled core, whose type stub lacks the authentication API used here."""
    return importlib.import_module("ray._raylet")
