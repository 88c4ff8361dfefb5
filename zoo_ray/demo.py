"""The main job on the embedded default: a small Spark-on-YARN program on the local Hadoop.

``zoo-ray demo`` starts the local Hadoop (or reuses a running one), adds the
three-line zoo_ray prelude (init_spark_on_yarn, RayContext, init), counts words
of a file on HDFS with Spark, hands the counts to Ray on the nodes that computed
them (``zoo_ray.data``), adds a Ray Data step and brings the result back into
Spark, estimates pi with Ray tasks in the executors, then stops everything it
started. Runs on the gateway (the driver).
"""
from __future__ import annotations

import os
import time
from typing import Any

from .minicluster import MiniCluster

__all__ = ["run_demo"]

_TEXT = "ray runs inside spark on yarn and spark runs on yarn\n"
#: Copies of each word count handed to Ray.
_COPIES = 20_000


def _pi_sample(n: int) -> int:
    import random

    return sum(random.random() ** 2 + random.random() ** 2 <= 1 for _ in range(n))


def _letters(batch: Any) -> Any:
    return batch.assign(letters=batch["word"].str.len() * batch["count"])


def _data_path(sc: Any, counts: Any) -> dict[str, Any]:
    """Spark's word counts into Ray on their own nodes, a Ray step, and back into Spark."""
    from collections import Counter

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from . import data

    session = SparkSession(sc)
    # Enough rows that each block exceeds what Ray keeps inline in its owner (100 KiB).
    words = (session.createDataFrame(counts, "word string, count long")
             .crossJoin(session.range(_COPIES).withColumnRenamed("id", "copy"))
             .repartition(4))
    ds = data.from_spark(words)
    where = Counter(data.block_executors(ds))
    letters = data.to_spark(ds.map_batches(_letters, batch_format="pandas"))
    return {"blocks_by_executor": dict(where), "word_copies": _COPIES,
            "letters": letters.agg(F.sum("letters")).first()[0]}


def run_demo(cluster_dir: str | None = None, keep_cluster: bool = False) -> dict[str, Any]:
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
        Application id, word counts computed by Spark from HDFS, the executors
        holding their Ray blocks, the letters counted by a Ray Data step and summed
        back in Spark, pi estimated by Ray tasks, the executors that ran Ray nodes,
        and timings.
    """
    import ray

    from .context import RayContext
    from .spark import init_spark_on_yarn

    started = time.monotonic()
    cluster = MiniCluster(cluster_dir)
    was_running = cluster.running
    cluster.up()
    report: dict[str, Any] = {"hadoop_up_s": round(time.monotonic() - started, 1)}
    try:
        # The three lines a user adds to an existing Ray program:
        sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=2,
                                executor_cores=1, executor_memory="512m",
                                driver_memory="512m", extra_executor_memory_for_ray="1g")
        ray_ctx = RayContext(sc=sc, object_store_memory="256m")
        ray_ctx.init()
        report["ray_up_s"] = round(time.monotonic() - started, 1)
        try:
            app_id = sc.applicationId
            base = f"{cluster.default_fs}/user/{os.environ.get('USER', 'zoo')}/zoo-ray-demo"
            sc.parallelize([_TEXT] * 1000, 8).saveAsTextFile(f"{base}/{app_id}/input")
            counts = (
                sc.textFile(f"{base}/{app_id}/input")
                .flatMap(str.split)
                .map(lambda word: (word, 1))
                .reduceByKey(lambda a, b: a + b)
            )
            report["word_counts"] = dict(counts.collect())
            report.update(_data_path(sc, counts))
            sample = ray.remote(_pi_sample)
            per_task, tasks = 100_000, 8
            inside = sum(ray.get([sample.remote(per_task) for _ in range(tasks)]))
            report["pi"] = round(4 * inside / (per_task * tasks), 4)
            report["ray_nodes_in_executors"] = [n["container"] for n in ray_ctx.nodes]
        finally:
            ray_ctx.stop()
            sc.stop()
        app = cluster.resource_manager.app(app_id)
        report.update(application_id=app_id, yarn_state=app["state"])
    finally:
        if not keep_cluster and not was_running:
            cluster.down()
    report["total_s"] = round(time.monotonic() - started, 1)
    return report
