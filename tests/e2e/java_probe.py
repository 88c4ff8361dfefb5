"""Java probes of a local Hadoop's own API, run as a client of it on the gateway (the
probes' sources sit beside this file)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from zoo_ray.minicluster.daemons import daemon_env, java_argv

#: An application with its ApplicationMaster in the client, and what the ResourceManager's
#: report gives the submitter (see the source).
AM_TOKEN_PROBE = Path(__file__).with_name("AmTokenProbe.java")


def run_probe(cluster: Any, source: Path, ccache: Path | None = None) -> dict[str, Any]:
    """Run the single-file Java program ``source`` with ``cluster``'s configuration and
    Hadoop's jars, as the user (on a secure cluster, with a fresh ticket in ``ccache``);
    return the JSON of its last line of output."""
    state = json.loads((cluster.dir / "state.json").read_text())
    java_home, security = Path(state["java_home"]), cluster.security
    env = daemon_env(java_home, cluster.hadoop_conf_dir)
    if security is not None:
        assert ccache is not None, "a secure cluster's client needs a ticket cache"
        env = security.client_env(env, ccache)
    argv = java_argv(java_home, cluster.hadoop_conf_dir, Path(state["jars"]), str(source), 256,
                     options=security.java_options if security is not None else None)
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1])
