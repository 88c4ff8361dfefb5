"""Packing and shipping a real conda environment against a venv with the same pip packages.

    python benchmarks/conda_vs_venv.py [--no-upload]

Builds (or reuses) the tests' conda environment (``tests/conda_env.py``: a conda
``python`` package made from this interpreter, Ray, PySpark, pyarrow, pandas,
numpy and psutil from pip), makes a venv with the same pip packages at the same
versions, then for each, in one run: packs it as ``init_spark_on_yarn`` does
(conda-pack or venv-pack, Spark's jars left out), and uploads the archive to the
HDFS of a local Hadoop it starts. Prints sizes, times and the conda/venv ratios.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conda_env import _PIP_PACKAGES, build_conda_env  # noqa: E402

from zoo_ray.envs import PythonEnv, _pack  # noqa: E402
from zoo_ray.filesystem import ClusterFileSystem  # noqa: E402
from zoo_ray.minicluster import MiniCluster, MiniClusterSpec  # noqa: E402


def _venv_like(prefix: Path, where: Path) -> Path:
    """A venv with the conda env's pip packages, at the same versions (pip's cache)."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    frozen = subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "freeze"],
                            check=True, capture_output=True, text=True).stdout.split()
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", *frozen],
                   check=True)
    return where


def _measure(env: PythonEnv, fs: ClusterFileSystem | None, scratch: Path) -> dict[str, float]:
    archive = scratch / f"{env.kind}.tar.gz"
    started = time.monotonic()
    _pack(env, archive)
    figures = {"MiB": archive.stat().st_size / 2**20, "pack s": time.monotonic() - started}
    if fs is not None:
        started = time.monotonic()
        fs.upload(archive, f"/bench/{archive.name}", label=archive.name)
        figures["upload s"] = time.monotonic() - started
    return figures


def main() -> None:
    from pyspark import SparkConf

    from zoo_ray import spark_internals

    upload = "--no-upload" not in sys.argv[1:]

    print(f"pip packages in both: {', '.join(_PIP_PACKAGES)}")
    started = time.monotonic()
    prefix = build_conda_env(name="zoo-ray-bench")
    print(f"conda env ready in {time.monotonic() - started:.1f}s (cached after the first run)")
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        scratch = Path(tmp)
        venv = _venv_like(prefix, scratch / "venv")
        envs = (("conda", prefix), ("venv", venv))
        if upload:
            with MiniCluster(scratch / "hadoop", spec=MiniClusterSpec(nodemanagers=1)) as cluster:
                os.environ["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
                fs = ClusterFileSystem(spark_internals.launch_jvm(SparkConf()),
                                       cluster.hadoop_conf_dir)
                results = {kind: _measure(PythonEnv(kind, str(path)), fs, scratch)
                           for kind, path in envs}
                spark_internals.stop_jvm()
        else:
            results = {kind: _measure(PythonEnv(kind, str(path)), None, scratch)
                       for kind, path in envs}
    for kind, figures in results.items():
        print(f"{kind:6s}" + "".join(f"  {k} {v:8.1f}" for k, v in figures.items()))
    for key in results["conda"]:
        print(f"conda/venv {key}: {results['conda'][key] / results['venv'][key]:.2f}")


if __name__ == "__main__":
    main()
