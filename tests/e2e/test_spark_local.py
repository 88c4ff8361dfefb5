"""init_spark_on_local: a real local-mode SparkContext, leaving the environment as it found it."""
from __future__ import annotations

import os
import sys

from zoo_ray import init_spark_on_local


def test_local_spark_runs_the_given_python_and_restores_the_environment(
        monkeypatch, no_shared_spark):
    monkeypatch.setenv("PYSPARK_PYTHON", "/nonexistent/python-of-the-user")
    sc = init_spark_on_local(cores=2, python_location=sys.executable)
    try:
        assert os.environ["PYSPARK_PYTHON"] == "/nonexistent/python-of-the-user"
        executables = sc.parallelize(range(4), 2).map(lambda _: __import__("sys").executable)
        assert set(executables.collect()) == {sys.executable}
        assert sc.master == "local[2]"
    finally:
        sc.stop()
