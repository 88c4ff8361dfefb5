"""The prelude on a secure local Hadoop against an open one: same machine, one run.

    python benchmarks/secure_prelude.py

Starts an open and a Kerberized local Hadoop (one NodeManager each, one after the other)
and on each runs a user's program twice in a Python of its own: ``init_spark_on_yarn`` plus
``RayContext.init()``, timed apart, then stops. The first run of each pays for the
NodeManager's first localization of the shipped environment; the second is what a user
pays every day. The secure program logs in from the user's ticket cache (``kinit``).
Prints the figures and the secure/open ratios, with the commit and the machine.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from prelude import run_prelude
from provenance import print_provenance


def _measure(kerberos: bool, root: Path) -> dict[str, float]:
    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec
    from zoo_ray.minicluster.kdc import Kdc

    spec = MiniClusterSpec(nodemanagers=1, nm_memory_mb=4096, nm_vcores=4, kerberos=kerberos)
    figures: dict[str, float] = {}
    started = time.monotonic()
    with MiniCluster(root / ("secure" if kerberos else "open"), spec=spec) as cluster:
        figures["cluster_up_s"] = time.monotonic() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
        security = cluster.security
        if security:
            ccache = root / "user-krb5cc"
            env.update(KRB5_CONFIG=str(security.realm.krb5_conf), KRB5CCNAME=f"FILE:{ccache}")
            Kdc.kinit(security.realm, security.user, Path(security.user_keytab), ccache)
        for label in ("first", "warm"):
            for name, value in run_prelude(str(cluster.hadoop_conf_dir), env).items():
                figures[f"{label}_{name}"] = value
    return figures


def main() -> None:
    print_provenance()
    with tempfile.TemporaryDirectory(prefix="zoo-ray-secure-bench-") as tmp:
        open_figures = _measure(False, Path(tmp))
        secure_figures = _measure(True, Path(tmp))
    for name, value in open_figures.items():
        secure = secure_figures[name]
        print(f"{name}\topen {value:.1f}\tsecure {secure:.1f}\tratio {secure / value:.2f}")


if __name__ == "__main__":
    main()
