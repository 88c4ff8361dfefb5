"""The local Hadoop: real HDFS and YARN daemons on one machine, from Maven Central jars.

Runs on the machine that hosts it; the daemons are JVMs of their own. Its modules:
:mod:`.cluster` (:class:`MiniCluster`, the face of the rest), :mod:`.spec` (what to
start), :mod:`.state` (the state file), :mod:`.bringup` (start and wait),
:mod:`.teardown` (stop), :mod:`.client` (``hadoop fs``, ``yarn logs``), :mod:`.config`
(the rendered configuration), :mod:`.daemons` (one JVM), :mod:`.artifacts` (the jars),
:mod:`.native_io` (the NodeManagers' libhadoop.so), :mod:`.kdc` (a Kerberos realm),
:mod:`.security` (the secure cluster), :mod:`.gpus` (pretend GPUs),
:mod:`.netns` (isolated hosts); :mod:`.hostexec` and :mod:`.watchdog` run as processes
of their own.

>>> from zoo_ray.minicluster import MiniCluster
>>> with MiniCluster() as cluster:          # doctest: +SKIP
...     print(cluster.hadoop_conf_dir)
"""
from .cluster import MiniCluster, default_dir
from .spec import MiniClusterSpec

__all__ = ["MiniCluster", "MiniClusterSpec", "default_dir"]
