"""Fixtures that run the real local Hadoop: one cluster per test session."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

#: The session cluster: two NodeManagers, each declaring more than this box has.
SESSION_SPEC = MiniClusterSpec(nodemanagers=2, nm_memory_mb=8192, nm_vcores=8)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniCluster]:
    """A running local Hadoop, started once for the session and stopped at its end."""
    with MiniCluster(tmp_path_factory.mktemp("hadoop"), spec=SESSION_SPEC) as running:
        yield running


@pytest.fixture
def spark_on_yarn(
    cluster: MiniCluster, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
):
    """A factory of SparkContexts with master yarn (client mode) on the session cluster."""
    from pyspark import cloudpickle

    # Executors cannot import test modules: ship their functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[request.module.__name__])
    return lambda **conf: _spark_on_yarn(cluster, monkeypatch, **conf)


@contextmanager
def _spark_on_yarn(cluster: MiniCluster, monkeypatch: pytest.MonkeyPatch, **conf: str):
    from pyspark import SparkConf, SparkContext

    monkeypatch.setenv("HADOOP_CONF_DIR", str(cluster.hadoop_conf_dir))
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark_conf = (
        SparkConf()
        .setMaster("yarn")
        .setAppName("zoo-ray-test")
        .set("spark.submit.deployMode", "client")
        .set("spark.driver.memory", "512m")
        .set("spark.yarn.am.memory", "512m")
        .set("spark.ui.showConsoleProgress", "false")
        # A plain SparkContext has no zoo_ray start to retry Spark's UI race (Jetty's
        # ConcurrentModificationException when the ApplicationMaster registers while the
        # UI attaches its handlers, seen under load); these tests need no UI.
        .set("spark.ui.enabled", "false")
    )
    for key, value in conf.items():
        spark_conf.set(key, value)
    sc = SparkContext(conf=spark_conf)
    try:
        yield sc
    finally:
        sc.stop()


@pytest.fixture(scope="module")
def sc(cluster: MiniCluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """init_spark_on_yarn with the test module's ``SPARK_ARGS``, for the whole module."""
    from zoo_ray import init_spark_on_yarn

    sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir),
                            **request.module.SPARK_ARGS)
    yield sc
    sc.stop()
