"""A test module's own local Hadoop beside the session's (tests only, on the gateway)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from zoo_ray import spark_internals
from zoo_ray.minicluster import MiniCluster, MiniClusterSpec


@contextmanager
def module_cluster(tmp_path_factory: pytest.TempPathFactory, name: str,
                   spec: MiniClusterSpec) -> Iterator[MiniCluster]:
    """Run ``spec`` for one module; on the way out, end the JVM configured for it and
    restore what zoo_ray left in the environment for it (its Hadoop configuration and
    pyspark.zip), so later modules run on the session's cluster."""
    saved = {k: os.environ.get(k) for k in ("HADOOP_CONF_DIR", "PYSPARK_ARCHIVES_PATH")}
    with MiniCluster(tmp_path_factory.mktemp(name), spec=spec) as running:
        yield running
    spark_internals.stop_jvm()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
