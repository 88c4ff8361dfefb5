"""Hadoop's command-line clients (``hadoop fs``, ``yarn logs``) against a local Hadoop.

Runs on the machine that hosts the local Hadoop, in the calling process: each call
is a short-lived JVM with the cluster's jars, Java and client configuration.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import MiniClusterStateError, ZooRayError
from .daemons import daemon_env, java_argv
from .state import StateFile

__all__ = ["run_client"]

_CLIENT_HEAP_MB = 256


def _client_argv(state_file: StateFile, conf_dir: Path, main_class: str,
                 args: list[str]) -> list[str]:
    state = state_file.read() or {}
    if not state.get("daemons"):
        raise MiniClusterStateError(
            f"The local Hadoop in {state_file.dir} is not running; run `zoo-ray minicluster up`."
        )
    return java_argv(
        Path(state["java_home"]), conf_dir, Path(state["jars"]), main_class,
        _CLIENT_HEAP_MB, args=args,
    )


def run_client(state_file: StateFile, conf_dir: Path, main_class: str, args: list[str],
               timeout: float) -> str:
    """Run Hadoop's command-line class ``main_class`` with ``args``; its standard output.

    Raises
    ------
    MiniClusterStateError
        The local Hadoop is not running.
    ZooRayError
        The command failed (with its error output).
    """
    argv = _client_argv(state_file, conf_dir, main_class, args)
    java_home = Path(argv[0]).parent.parent
    result = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
        env=daemon_env(java_home, conf_dir),
    )
    if result.returncode != 0:
        raise ZooRayError(
            f"{main_class.rsplit('.', 1)[-1]} {' '.join(args)} failed (exit "
            f"{result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout
