"""Ray token authentication for the driver (runs in the driver's process, on the gateway).

Ray reads ``RAY_AUTH_MODE`` once, when ``ray`` is first imported, and the token
from ``RAY_AUTH_TOKEN_PATH`` when it first connects. So zoo_ray points both at a
private per-process token file as soon as it is imported (before the user's own
``import ray``, if zoo_ray comes first), and :class:`~zoo_ray.RayContext` writes
each cluster's token into that file. The token never appears in the environment,
on a command line or in a log.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import RayContextError
from .host import write_private

__all__ = ["prepare_driver_env", "driver_token_path", "write_driver_token", "clear_driver_token"]

_MODE, _PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"


def driver_token_path() -> Path:
    """This process's private token file (its directory is 0700)."""
    directory = Path(tempfile.gettempdir()) / f"zoo-ray-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"driver-{os.getpid()}.token"


def prepare_driver_env() -> None:
    """Turn token authentication on for Ray in this process, unless the user chose a mode."""
    if os.environ.get(_MODE) is None:
        os.environ[_MODE] = "token"
    if os.environ[_MODE].lower() == "token" and _PATH not in os.environ:
        os.environ[_PATH] = str(driver_token_path())


def write_driver_token(token: str) -> None:
    """Make ``token`` the one this process presents to Ray.

    Raises
    ------
    RayContextError
        When Ray in this process cannot use zoo_ray's token: ``ray`` was imported
        before ``zoo_ray`` with authentication off, or the environment names another
        mode or token file.
    """
    prepare_driver_env()
    path = driver_token_path()
    if Path(os.environ[_PATH]).parent == path.parent:
        # Inherited from a parent zoo_ray driver: this process gets its own token file.
        os.environ[_PATH] = str(path)
    if os.environ[_MODE].lower() != "token" or os.environ[_PATH] != str(path):
        raise RayContextError(
            f"zoo_ray's Ray clusters require token authentication, but this process has "
            f"{_MODE}={os.environ.get(_MODE)!r} and {_PATH}={os.environ.get(_PATH)!r}. Unset "
            "both before starting Python and let zoo_ray set them."
        )
    if "ray" in sys.modules:
        raylet = _raylet()
        if raylet.get_authentication_mode() != raylet.AuthenticationMode.TOKEN:
            raise RayContextError(
                "`import ray` ran before `import zoo_ray`, so Ray in this process started "
                "with token authentication off and cannot join zoo_ray's cluster. Import "
                "zoo_ray first (or set RAY_AUTH_MODE=token before starting Python)."
            )
    write_private(path, token)
    if "ray" in sys.modules:
        _raylet().AuthenticationTokenLoader.instance().reset_cache()


def clear_driver_token() -> None:
    """Forget the token (the file goes; the next cluster writes its own)."""
    driver_token_path().unlink(missing_ok=True)
    if "ray" in sys.modules:
        _raylet().AuthenticationTokenLoader.instance().reset_cache()


def _raylet() -> Any:
    """Ray's compiled core, whose type stub lacks the authentication API used here."""
    return importlib.import_module("ray._raylet")
