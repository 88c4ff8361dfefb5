"""Local Hadoop start-up: cold (jars downloaded) vs warm, daemon memory, leftovers after down.

    python benchmarks/minicluster_startup.py [--nodemanagers 2] [--skip-cold]

Cold runs with an empty HOME and an empty Maven local repository (Maven reads
~/.m2 from the passwd entry, not $HOME, hence MAVEN_OPTS), so every jar comes from
Maven Central. Prints one figure per line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def _zoo_ray(args, env):
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "zoo_ray.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def _measure(cluster_dir: Path, env: dict, nodemanagers: int, label: str) -> None:
    up_s = _zoo_ray(["minicluster", "up", "--dir", str(cluster_dir),
                     "--nodemanagers", str(nodemanagers)], env)
    state = json.loads((cluster_dir / "state.json").read_text())
    procs = [psutil.Process(d["pid"]) for d in state["daemons"]]
    rss = sum(p.memory_info().rss for p in procs)
    family = procs + [c for p in procs for c in p.children(recursive=True)]
    down_s = _zoo_ray(["minicluster", "down", "--dir", str(cluster_dir)], env)
    leftovers = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    print(f"{label}_up_s\t{up_s:.1f}")
    print(f"{label}_daemons\t{len(procs)}")
    print(f"{label}_daemons_rss_mb\t{rss / 2**20:.0f}")
    print(f"{label}_down_s\t{down_s:.1f}")
    print(f"{label}_leftover_processes\t{len(leftovers)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodemanagers", type=int, default=2)
    parser.add_argument("--skip-cold", action="store_true", help="only the warm start")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        env = dict(os.environ)
        if not args.skip_cold:
            env["HOME"] = str(Path(tmp) / "home")
            os.makedirs(env["HOME"])
            env.pop("ZOO_RAY_CACHE_DIR", None)
            env.pop("XDG_CACHE_HOME", None)
            env["MAVEN_OPTS"] = f"-Dmaven.repo.local={Path(tmp) / 'm2'}"
            _measure(Path(tmp) / "cold", env, args.nodemanagers, "cold")
            jars = Path(env["HOME"]) / ".cache" / "zoo_ray"
            size = sum(f.stat().st_size for f in jars.rglob("*.jar"))
            print(f"hadoop_jars_mb\t{size / 2**20:.0f}")
        # Warm: jars cached; a fresh directory still formats its NameNode.
        _measure(Path(tmp) / "warm", env, args.nodemanagers, "warm_fresh_dir")
        # Warm restart: the same directory again, already formatted.
        _measure(Path(tmp) / "warm", env, args.nodemanagers, "warm_restart")


if __name__ == "__main__":
    main()
