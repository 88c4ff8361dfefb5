"""Cold vs warm ``init_spark_on_yarn``: wall time, bytes packed, bytes written to HDFS.

    python benchmarks/init_spark_cache.py [--env-prefix PREFIX]

Starts its own local Hadoop and uses an empty zoo_ray cache, then calls
init_spark_on_yarn twice with the same environment (default: the running venv).
The first call packs the env and uploads it and Spark's jars; the second should
pack 0 bytes and upload almost nothing. HDFS bytes come from the DataNode's
``BytesWritten`` counter, so Spark's own staging files are counted too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _datanode_bytes_written(cluster) -> int:
    url = (f"http://127.0.0.1:{cluster.ports['dn_http']}/jmx"
           "?qry=Hadoop:service=DataNode,name=DataNodeActivity-*")
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.loads(response.read())["beans"][0]["BytesWritten"])


def _packed_bytes(cache: Path) -> int:
    # An environment's layers, or its single archive when it cannot be layered.
    return sum(f.stat().st_size for folder in ("layers", "envs")
               for f in (cache / folder).glob("*.tar.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-prefix", default=sys.prefix)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        cache = Path(tmp) / "cache"
        # Keep the Hadoop jars already fetched: only the env and Spark-jar caches start empty.
        jars = Path(os.environ.get("ZOO_RAY_CACHE_DIR") or Path.home() / ".cache" / "zoo_ray")
        cache.mkdir()
        for entry in jars.glob("hadoop-*"):
            (cache / entry.name).symlink_to(entry)
        os.environ["ZOO_RAY_CACHE_DIR"] = str(cache)

        from zoo_ray import init_spark_on_yarn
        from zoo_ray.minicluster import MiniCluster

        with MiniCluster(Path(tmp) / "hadoop") as cluster:
            figures = {}
            for label in ("cold", "warm"):
                hdfs_before, packed_before = _datanode_bytes_written(cluster), _packed_bytes(cache)
                started = time.monotonic()
                sc = init_spark_on_yarn(
                    hadoop_conf=str(cluster.hadoop_conf_dir), env_prefix=args.env_prefix,
                    num_executors=2, executor_cores=1, executor_memory="512m",
                )
                figures[f"{label}_init_s"] = time.monotonic() - started
                sc.stop()
                time.sleep(2)  # let the DataNode's metrics catch up with the last block
                figures[f"{label}_packed_mb"] = (_packed_bytes(cache) - packed_before) / 2**20
                figures[f"{label}_hdfs_written_mb"] = (
                    _datanode_bytes_written(cluster) - hdfs_before) / 2**20
        for name, value in figures.items():
            print(f"{name}\t{value:.2f}")
        print(f"warm_vs_cold_time_ratio\t{figures['warm_init_s'] / figures['cold_init_s']:.2f}")


if __name__ == "__main__":
    main()
