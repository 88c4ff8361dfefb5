"""The local Hadoop: real HDFS and YARN daemons on one machine, from Maven Central jars.

Runs on the machine that hosts it; the daemons are JVMs of their own.

>>> from zoo_ray.minicluster import MiniCluster
>>> with MiniCluster() as cluster:          # doctest: +SKIP
...     print(cluster.hadoop_conf_dir)
"""
from .cluster import MiniCluster, default_dir
from .spec import MiniClusterSpec

__all__ = ["MiniCluster", "MiniClusterSpec", "default_dir"]
