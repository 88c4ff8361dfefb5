"""A stand-in for a running SparkContext, as far as RayContext reads one before it
submits a job (unit tests only)."""
from __future__ import annotations


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _StubJavaContext:
    """The JVM side of a running SparkContext, as far as RayContext asks it."""

    stopped = False

    def sc(self):
        return self

    def isStopped(self):
        return self.stopped

    def stop(self):
        self.stopped = True

    def getExecutorMemoryStatus(self):
        return self

    def size(self):
        return 3  # the driver's block manager and two executors'


class StubSparkContext:
    """Just what RayContext reads before it submits any job."""

    applicationId = "application_0_0001"

    def __init__(self, **conf):
        self._jsc = _StubJavaContext()
        self.conf = _Conf({"spark.master": "yarn", "spark.executor.instances": "2",
                           "spark.executor.cores": "1", **conf})

    def getConf(self):
        return self.conf

    def stop(self):
        self._jsc = None
