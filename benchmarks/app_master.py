"""The prelude on a fresh local Hadoop with Spark's ApplicationMaster in the driver (zoo_ray's
default) against one in a container: same machine, one run.

    python benchmarks/app_master.py

Starts a fresh local Hadoop (two NodeManagers) for each way, one after the other, and on
each runs a user's program twice in a Python of its own (``init_spark_on_yarn`` with two
executors plus ``RayContext.init()``, timed apart). The first run pays for the cold
NodeManagers: with a container AM, its NodeManager localizes the environment and Spark's
jars before any executor is asked for. The zoo_ray cache on this host is warm, so both
ways pack nothing and upload the same. Prints the figures and driver/container ratios,
with the commit and the machine.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from prelude import run_prelude
from provenance import print_provenance

_WAYS = {"container": "false", "driver": "true"}


def _measure(unmanaged: str, root: Path) -> dict[str, float]:
    from zoo_ray.minicluster import MiniCluster

    figures: dict[str, float] = {}
    with MiniCluster(root / unmanaged) as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
        conf = {"spark.yarn.unmanagedAM.enabled": unmanaged}
        for label in ("first", "warm"):
            started = time.monotonic()
            for name, value in run_prelude(str(cluster.hadoop_conf_dir), env, conf, 2).items():
                figures[f"{label}_{name}"] = value
            figures[f"{label}_prelude_s"] = time.monotonic() - started
    return figures


def main() -> None:
    print_provenance()
    with tempfile.TemporaryDirectory(prefix="zoo-ray-am-bench-") as tmp:
        results = {way: _measure(value, Path(tmp)) for way, value in _WAYS.items()}
    container, driver = results["container"], results["driver"]
    for name, value in container.items():
        print(f"{name}\tcontainer AM {value:.1f}\tAM in the driver {driver[name]:.1f}\t"
              f"ratio {driver[name] / value:.2f}")


if __name__ == "__main__":
    main()
