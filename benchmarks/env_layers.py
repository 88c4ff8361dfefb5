"""A changed environment shipped in layers: what ships again after ``pip install`` of one
small package, and the next prelude against one on an unchanged environment.

    python benchmarks/env_layers.py [--venv DIR]

Builds (or reuses) a venv with Ray, pyarrow, pandas, numpy and psutil at ``--venv`` (pip, from
PyPI), starts a fresh local Hadoop (two NodeManagers) and runs a user's prelude
(``init_spark_on_yarn`` with two executors plus ``RayContext.init()``) with that venv three
times: cold, again unchanged, and after ``pip install`` of a one-module wheel. Counts the
bytes written to HDFS (the DataNode's ``BytesWritten``) and the archives the NodeManagers
localized, and prints them as shares of the environment, with the ratio of the changed
prelude to the unchanged one. The wheel is uninstalled at the end.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prelude import run_prelude
from provenance import print_provenance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.wheels import make_wheel  # noqa: E402

#: What zoo_ray needs in the executors (setup.py: ray[default], psutil) and the data stack.
_PACKAGES = ["ray[default]==2.60.0", "pyarrow", "pandas", "numpy", "psutil"]


def _venv(path: Path) -> Path:
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", *_PACKAGES], check=True)
    return path


def _hdfs_written(cluster) -> int:
    url = (f"http://127.0.0.1:{cluster.ports['dn_http']}/jmx"
           "?qry=Hadoop:service=DataNode,name=DataNodeActivity-*")
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.loads(response.read())["beans"][0]["BytesWritten"])


def _localized(cluster) -> dict[str, int]:
    """Each archive the NodeManagers localized (its local directory) and its bytes."""
    found = {}
    for folder in cluster.dir.glob("nm*/local/**/filecache/*/*.tar.gz"):
        found[str(folder)] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "zoo-ray-bench-venv"))
    args = parser.parse_args()
    print_provenance()
    venv = _venv(Path(args.venv))
    from zoo_ray.minicluster import MiniCluster

    with tempfile.TemporaryDirectory(prefix="zoo-ray-layers-bench-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop") as cluster:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
            env["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
            runs = {}
            for label in ("cold", "unchanged", "changed"):
                if label == "changed":
                    wheel = make_wheel(Path(tmp), "zoo_bench_probe", "changed")
                    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                    "--no-index", str(wheel)], check=True)
                written, localized = _hdfs_written(cluster), _localized(cluster)
                started = time.monotonic()
                figures = run_prelude(str(cluster.hadoop_conf_dir), env, None, 2, str(venv))
                figures["prelude_s"] = time.monotonic() - started
                time.sleep(2)  # the DataNode's counters catch up with the last block
                figures["hdfs_written_mb"] = (_hdfs_written(cluster) - written) / 2**20
                now = _localized(cluster)
                figures["localized_mb"] = sum(
                    size for path, size in now.items() if path not in localized) / 2**20
                runs[label] = figures
                print(f"{label}\t{json.dumps({k: round(v, 2) for k, v in figures.items()})}",
                      flush=True)
            listed = cluster.fs("-du", "-s", f"/user/{getpass.getuser()}/.zoo_ray/cache/layers")
            layers_mb = int(listed.split()[0]) / 2**20
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y",
                            "zoo_bench_probe"], check=True)
    cold, unchanged, changed = runs["cold"], runs["unchanged"], runs["changed"]
    # HDFS: all the application wrote (its staging files too) against the layers' bytes;
    # the NodeManagers: what they unpacked of the environment, first and after the change.
    print(f"after pip install of one package: HDFS written {changed['hdfs_written_mb']:.2f} MB "
          f"against the environment's {layers_mb:.1f} MB of layers "
          f"({changed['hdfs_written_mb'] / layers_mb:.2%}); localized "
          f"{changed['localized_mb']:.2f} MB against {cold['localized_mb']:.1f} MB at first "
          f"({changed['localized_mb'] / cold['localized_mb']:.2%})")
    print(f"prelude after the change / unchanged: "
          f"{changed['prelude_s'] / unchanged['prelude_s']:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
