"""Rendering the local Hadoop's configuration from ``hadoop_conf_example/``.

The example files a gateway user reads are the templates: every host name, port,
directory and size in them is replaced with one on this machine, everything else
(scheduler, queues, log aggregation, memory checks) is kept. So the local Hadoop
runs the configuration we document. Runs on the machine that starts the local Hadoop.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..gpu_claims import GPU_RESOURCE
from ..hadoop_conf import HadoopConf
from ..host import free_ports
from .daemons import SMALL_BOX_JVM
from .gpus import gpu_overrides, write_nvidia_smi
from .spec import MiniClusterSpec

__all__ = ["HOST", "template_dir", "plan_ports", "render"]

#: Without isolated hosts every daemon binds to loopback: the local Hadoop is never
#: reachable from other machines. With them, the gateway's bridge address takes its place.
HOST = "127.0.0.1"

_LOG4J = """\
hadoop.root.logger=INFO,RFA
hadoop.log.dir=.
hadoop.log.file=hadoop.log
log4j.rootLogger=${hadoop.root.logger}
log4j.appender.RFA=org.apache.log4j.RollingFileAppender
log4j.appender.RFA.File=${hadoop.log.dir}/${hadoop.log.file}
log4j.appender.RFA.MaxFileSize=32MB
log4j.appender.RFA.MaxBackupIndex=2
log4j.appender.RFA.layout=org.apache.log4j.PatternLayout
log4j.appender.RFA.layout.ConversionPattern=%d{ISO8601} %p %c: %m%n
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c: %m%n
"""


def template_dir() -> Path:
    """The ``hadoop_conf_example`` directory (installed with the package, or the checkout's)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "hadoop_conf_example", here.parent / "hadoop_conf_example"):
        if (candidate / "yarn-site.xml").is_file():
            return candidate
    raise FileNotFoundError(
        "hadoop_conf_example/ is missing from the zoo_ray installation; reinstall zoo_ray."
    )


def _port_names(spec: MiniClusterSpec) -> list[str]:
    names = [
        "nn_rpc", "nn_http", "dn_data", "dn_http", "dn_ipc",
        "rm_rpc", "rm_scheduler", "rm_tracker", "rm_admin", "rm_web",
    ]
    for i in range(spec.nodemanagers):
        names += [f"nm{i}_rpc", f"nm{i}_localizer", f"nm{i}_web"]
    return names


def plan_ports(spec: MiniClusterSpec, host: str = HOST) -> dict[str, int]:
    """Choose every daemon port: consecutive from ``spec.base_port``, or free ones.

    Free ports are taken from the kernel all at once, so no two daemons are given
    the same port.
    """
    names = _port_names(spec)
    if spec.base_port:
        return {name: spec.base_port + i for i, name in enumerate(names)}
    return dict(zip(names, free_ports(len(names), host)))


def _common_overrides(spec: MiniClusterSpec, root: Path, ports: dict[str, int],
                      host: str) -> dict:
    hdfs = f"hdfs://{host}:{ports['nn_rpc']}"
    return {
        "core-site.xml": {
            "fs.defaultFS": hdfs,
            "hadoop.tmp.dir": str(root / "tmp"),
        },
        "hdfs-site.xml": {
            "dfs.namenode.rpc-address": f"{host}:{ports['nn_rpc']}",
            "dfs.namenode.http-address": f"{host}:{ports['nn_http']}",
            "dfs.namenode.name.dir": (root / "hdfs" / "name").as_uri(),
            "dfs.datanode.data.dir": (root / "hdfs" / "data").as_uri(),
            "dfs.datanode.address": f"{host}:{ports['dn_data']}",
            "dfs.datanode.http.address": f"{host}:{ports['dn_http']}",
            "dfs.datanode.ipc.address": f"{host}:{ports['dn_ipc']}",
            "dfs.replication": "1",
            # One DataNode: a write pipeline cannot replace a failed node with another.
            "dfs.client.block.write.replace-datanode-on-failure.enable": "false",
        },
        "yarn-site.xml": {
            "yarn.resourcemanager.hostname": host,
            "yarn.resourcemanager.address": f"{host}:{ports['rm_rpc']}",
            "yarn.resourcemanager.scheduler.address": f"{host}:{ports['rm_scheduler']}",
            "yarn.resourcemanager.resource-tracker.address": f"{host}:{ports['rm_tracker']}",
            "yarn.resourcemanager.admin.address": f"{host}:{ports['rm_admin']}",
            "yarn.resourcemanager.webapp.address": f"{host}:{ports['rm_web']}",
            "yarn.scheduler.minimum-allocation-mb": "128",
            "yarn.scheduler.maximum-allocation-mb": str(spec.nm_memory_mb),
            "yarn.scheduler.maximum-allocation-vcores": str(spec.nm_vcores),
            "yarn.nodemanager.resource.memory-mb": str(spec.nm_memory_mb),
            "yarn.nodemanager.resource.cpu-vcores": str(spec.nm_vcores),
            "yarn.nodemanager.resource.detect-hardware-capabilities": "false",
            # Several NodeManagers share one host: tell them apart by port, as
            # MiniYARNCluster does.
            "yarn.scheduler.include-port-in-node-name": "true",
            # Declared resources exceed the disk and cores of a laptop or CI box on purpose;
            # do not mark nodes unhealthy because the shared disk is fuller than 90%.
            "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": "100",
            "yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb": "64",
            "yarn.timeline-service.enabled": "false",
            "yarn.resourcemanager.system-metrics-publisher.enabled": "false",
            "yarn.nodemanager.remote-app-log-dir": "/tmp/logs",
            "yarn.log-aggregation-enable": "true",
            # Every container's JVM (Spark's ApplicationMaster and executors) as small as
            # the daemons: see SMALL_BOX_JVM.
            "yarn.nodemanager.admin-env": ("MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX,"
                                           f"JAVA_TOOL_OPTIONS={' '.join(SMALL_BOX_JVM)}"),
            # Not /tmp/hadoop-yarn-<user>, which would outlive the local Hadoop.
            "yarn.node-attribute.fs-store.root-dir": (root / "yarn" / "node-attribute").as_uri(),
        },
    }


#: What makes a NodeManager without cgroups kill containers over their memory.
_ENFORCE_MEMORY = {
    "yarn.nodemanager.pmem-check-enabled": "true",
    # "enforced" (the default) skips the NodeManager's own check in favour of cgroups.
    "yarn.nodemanager.resource.memory.enforced": "false",
    # Shared memory (Ray's object store, mapped by the raylet and by every worker that
    # reads it) counted once, by PSS, not once per process mapping it.
    "yarn.nodemanager.container-monitor.procfs-tree.smaps-based-rss.enabled": "true",
}


#: What makes the ResourceManager preempt containers for a queue under its guarantee.
_PREEMPTION = {
    "yarn.resourcemanager.scheduler.monitor.enable": "true",
    "yarn.resourcemanager.scheduler.monitor.policies":
        "org.apache.hadoop.yarn.server.resourcemanager.monitor.capacity."
        "ProportionalCapacityPreemptionPolicy",
    # Seconds, not Hadoop's 3 s and 15 s: tests wait for it.
    "yarn.resourcemanager.monitor.capacity.preemption.monitoring_interval": "1000",
    "yarn.resourcemanager.monitor.capacity.preemption.max_wait_before_kill": "5000",
    # A small cluster's whole container per round, not 10 % of the cluster at a time.
    "yarn.resourcemanager.monitor.capacity.preemption.total_preemption_per_round": "1.0",
    "yarn.resourcemanager.monitor.capacity.preemption.natural_termination_factor": "1.0",
}


def _token_lifetimes(spec: MiniClusterSpec) -> dict[str, dict[str, str]]:
    """HDFS's and YARN's delegation token renew interval and lifetime, where the spec sets them."""
    keys = {"token_renew_interval_s": "renew-interval", "token_max_lifetime_s": "max-lifetime"}
    hdfs, yarn = {}, {}
    for field, suffix in keys.items():
        seconds = getattr(spec, field)
        if seconds is not None:
            hdfs[f"dfs.namenode.delegation.token.{suffix}"] = str(seconds * 1000)
            yarn[f"yarn.resourcemanager.delegation.token.{suffix}"] = str(seconds * 1000)
    if spec.token_renew_interval_s is not None:
        # When the ResourceManager replaces an application's HDFS tokens (with proxy-user
        # privileges): in their last renewal, as a real cluster's 3 h of 7 days, not at
        # the first renewal as the 3 h default would with tokens of a minute.
        yarn["yarn.resourcemanager.system-credentials.valid-time-remaining"] = str(
            spec.token_renew_interval_s * 500)
    return {"hdfs-site.xml": hdfs, "yarn-site.xml": yarn}


def _nodemanager_overrides(root: Path, ports: dict[str, int], i: int, host: str) -> dict:
    nm_dir = root / f"nm{i}"
    return {
        # With Hadoop's native library loaded, the default group mapping asks it for JNI
        # group lookups that zoo_ray's (native_io) does not have; the shell is the same
        # answer the default falls back to without the library.
        "core-site.xml": {
            "hadoop.security.group.mapping":
                "org.apache.hadoop.security.ShellBasedUnixGroupsMapping",
        },
        "yarn-site.xml": {
            "yarn.nodemanager.hostname": host,
            "yarn.nodemanager.address": f"{host}:{ports[f'nm{i}_rpc']}",
            "yarn.nodemanager.localizer.address": f"{host}:{ports[f'nm{i}_localizer']}",
            "yarn.nodemanager.webapp.address": f"{host}:{ports[f'nm{i}_web']}",
            "yarn.nodemanager.local-dirs": str(nm_dir / "local"),
            "yarn.nodemanager.log-dirs": str(nm_dir / "logs"),
            "yarn.nodemanager.recovery.enabled": "false",
        }
    }


def _https_addresses(ports: dict[str, int], host: str) -> dict:
    # HTTPS_ONLY: the web ports serve TLS; the plain HTTP endpoints get no fixed port.
    return {"hdfs-site.xml": {
        "dfs.namenode.https-address": f"{host}:{ports['nn_http']}",
        "dfs.namenode.http-address": f"{host}:0",
        "dfs.datanode.https.address": f"{host}:{ports['dn_http']}",
        "dfs.datanode.http.address": f"{host}:0",
    }}


def render(spec: MiniClusterSpec, root: Path, ports: dict[str, int], gateway: str = HOST,
           nm_hosts: list[str] | None = None,
           secure: dict[str, dict[str, str]] | None = None) -> dict[str, Path]:
    """Write the configuration directories of every daemon under ``root``.

    ``gateway`` is the address of HDFS and the ResourceManager, ``nm_hosts`` the
    address of each NodeManager (default: all on ``gateway``). ``secure`` holds a
    secure cluster's keys, file by file, ``ssl-server.xml`` among them.

    Returns
    -------
    dict
        ``{"client": <conf dir for clients and the ResourceManager>, "server": <for the
        NameNode and DataNode>, "nm0": ..., "nm1": ...}``. Only a secure cluster's server
        directory differs from the client's: it holds ``ssl-server.xml`` (mode 0600), the
        keystore's passwords, which stay out of the directory users hand to Spark (Spark
        uploads that directory with every application).
    """
    conf = HadoopConf(template_dir())
    conf.set(_common_overrides(spec, root, ports, gateway))
    if spec.preemption:
        conf.set({"yarn-site.xml": _PREEMPTION})
    conf.set(_token_lifetimes(spec))
    if spec.gpus:
        # The ResourceManager and every client learn the resource (the scheduler's
        # DominantResourceCalculator, from the template, counts it).
        conf.set({"yarn-site.xml": {"yarn.resource-types": GPU_RESOURCE}})
    server_only: dict[str, dict[str, str]] = {}
    # HadoopConf reads only the site files: the TLS files are set again in every directory.
    tls: dict[str, dict[str, str]] = {}
    if secure:
        server_only = {name: props for name, props in secure.items() if name == "ssl-server.xml"}
        tls = {name: props for name, props in secure.items() if name == "ssl-client.xml"}
        conf.set({name: props for name, props in secure.items() if name not in server_only})
        conf.set(_https_addresses(ports, gateway))
    dirs = {"client": conf.write(root / "conf")}
    (dirs["client"] / "log4j.properties").write_text(_LOG4J)
    dirs["server"] = dirs["client"]
    if server_only:
        server = HadoopConf(dirs["client"])
        server.set({**server_only, **tls})
        # The directory is private before the passwords are written into it.
        (root / "server-conf").mkdir(mode=0o700, exist_ok=True)
        dirs["server"] = server.write(root / "server-conf")
        os.chmod(dirs["server"] / "ssl-server.xml", 0o600)
        (dirs["server"] / "log4j.properties").write_text(_LOG4J)
    for i in range(spec.nodemanagers):
        nm_conf = HadoopConf(dirs["client"])
        nm_host = nm_hosts[i] if nm_hosts else gateway
        nm_conf.set({**_nodemanager_overrides(root, ports, i, nm_host), **tls})
        if spec.enforce_memory:
            nm_conf.set({"yarn-site.xml": _ENFORCE_MEMORY})
        if spec.gpus:
            nvidia_smi = write_nvidia_smi(root / f"nm{i}" / "bin", i, spec.gpus)
            nm_conf.set(gpu_overrides(nvidia_smi, nm_conf.raw("yarn.nodemanager.admin-env") or ""))
        nm_dir = nm_conf.write(root / f"nm{i}" / "conf")
        (nm_dir / "log4j.properties").write_text(_LOG4J)
        dirs[f"nm{i}"] = nm_dir
    return dirs
