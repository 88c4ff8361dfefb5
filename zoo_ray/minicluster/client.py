"""Hadoop's command-line clients (``hadoop fs``, ``yarn logs``) against a local Hadoop.

Runs on the machine that hosts the local Hadoop, in the calling process: each call
is a short-lived JVM with the cluster's jars, Java and client configuration.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import MiniClusterStateError, ZooRayError
from .daemons import daemon_env, java_argv
from .security import Security
from .state import StateFile

__all__ = ["run_client"]

_CLIENT_HEAP_MB = 256


def run_client(state_file: StateFile, conf_dir: Path, main_class: str, args: list[str],
               timeout: float, principal: str | None = None) -> str:
    """Run Hadoop's command-line class ``main_class`` with ``args``; its standard output.

    On a secure cluster the client acts as ``principal`` (default: the realm's user),
    with a ticket of its own.

    Raises
    ------
    MiniClusterStateError
        The local Hadoop is not running.
    ZooRayError
        The command failed (with its error output).
    """
    state = state_file.read() or {}
    if not state.get("daemons"):
        raise MiniClusterStateError(
            f"The local Hadoop in {state_file.dir} is not running; run `zoo-ray minicluster up`."
        )
    java_home = Path(state["java_home"])
    env = daemon_env(java_home, conf_dir)
    options: list[str] = []
    if state.get("security"):
        security = Security.from_dict(state["security"])
        ccache = state_file.dir / "security" / ("krb5cc" if principal is None else
                                                f"krb5cc-{principal.split('/')[0]}")
        env = security.client_env(env, ccache, principal)
        options = security.java_options
    argv = java_argv(java_home, conf_dir, Path(state["jars"]), main_class, _CLIENT_HEAP_MB,
                     args=args, options=options)
    result = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
        env=env,
    )
    if result.returncode != 0:
        raise ZooRayError(
            f"{main_class.rsplit('.', 1)[-1]} {' '.join(args)} failed (exit "
            f"{result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout
