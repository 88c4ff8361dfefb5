"""The main job on the embedded default: a small Spark-on-YARN program on the local Hadoop.

``zoo-ray demo`` starts the local Hadoop (or reuses a running one), runs a word
count whose input and output live on HDFS with executors on YARN, reports where
the executors ran, and stops the cluster again if it started it.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Dict, Optional

from .minicluster import MiniCluster

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

_TEXT = "ray runs inside spark on yarn and spark runs on yarn\n"


def _container() -> tuple:
    # Runs in an executor: the NodeManager and container it runs in.
    return os.environ.get("NM_HOST", "?") + ":" + os.environ.get("NM_PORT", "?"), os.environ.get(
        "CONTAINER_ID", "?"
    )


def run_demo(cluster_dir: Optional[str] = None, keep_cluster: bool = False) -> Dict[str, Any]:
    """Run the demo job and return what it measured.

    Parameters
    ----------
    cluster_dir : str, optional
        Directory of the local Hadoop (default: ``~/.cache/zoo_ray/minicluster``).
    keep_cluster : bool
        Leave the local Hadoop running afterwards.

    Returns
    -------
    dict
        Application id, final YARN status, word counts, the NodeManagers the
        executors ran on, and timings.
    """
    from pyspark import SparkConf, SparkContext

    started = time.monotonic()
    cluster = MiniCluster(cluster_dir)
    was_running = cluster.running
    cluster.up()
    report: Dict[str, Any] = {"hadoop_up_s": round(time.monotonic() - started, 1)}
    try:
        os.environ["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
        # PySpark tells executors which interpreter to run from the driver's
        # PYSPARK_PYTHON; on this one machine that can be this very interpreter.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        conf = (
            SparkConf()
            .setMaster("yarn")
            .setAppName("zoo-ray-demo")
            .set("spark.submit.deployMode", "client")
            .set("spark.executor.instances", "2")
            .set("spark.executor.cores", "1")
            .set("spark.executor.memory", "1g")
            .set("spark.driver.memory", "512m")
            .set("spark.yarn.am.memory", "512m")
            .set("spark.ui.showConsoleProgress", "false")
        )
        sc = SparkContext(conf=conf)
        try:
            sc.setLogLevel("WARN")
            app_id = sc.applicationId
            base = f"{cluster.default_fs}/user/{os.environ.get('USER', 'zoo')}/zoo-ray-demo"
            sc.parallelize([_TEXT] * 1000, 8).saveAsTextFile(f"{base}/{app_id}/input")
            counts = (
                sc.textFile(f"{base}/{app_id}/input")
                .flatMap(str.split)
                .map(lambda word: (word, 1))
                .reduceByKey(lambda a, b: a + b)
            )
            counts.map(lambda kv: f"{kv[0]}\t{kv[1]}").saveAsTextFile(f"{base}/{app_id}/counts")
            lines = sc.textFile(f"{base}/{app_id}/counts").collect()
            report["counts"] = {w: int(n) for w, n in (line.split("\t") for line in lines)}
            report["executors"] = sorted(set(sc.parallelize(range(16), 16).map(
                lambda _: _container()).collect()))
        finally:
            sc.stop()
        rm = cluster.resource_manager
        deadline = time.monotonic() + 60
        while rm.app(app_id)["state"] != "FINISHED" and time.monotonic() < deadline:
            time.sleep(0.5)
        app = rm.app(app_id)
        report.update(application_id=app_id, state=app["state"], final_status=app["finalStatus"])
    finally:
        if not keep_cluster and not was_running:
            cluster.down()
    report["total_s"] = round(time.monotonic() - started, 1)
    return report
