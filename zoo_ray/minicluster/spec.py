"""The description of a local Hadoop: how many NodeManagers, how big, which ports.

Plain data, used wherever the local Hadoop is started or inspected.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import InvalidArgumentError
from .artifacts import HADOOP_VERSION

__all__ = ["MiniClusterSpec"]

#: HDFS's shortest delegation token renew interval and lifetime, in seconds.
_MIN_TOKEN_S = 10


def _default_heaps() -> dict[str, int]:
    # Small heaps: a 2-core, few-GB box must hold these daemons plus Spark and Ray.
    return {"namenode": 256, "datanode": 192, "resourcemanager": 384, "nodemanager": 256}


@dataclass
class MiniClusterSpec:
    """What to start. Round-trips through :meth:`to_dict` / :meth:`from_dict`.

    Parameters
    ----------
    nodemanagers : int
        Number of NodeManager daemons (separate JVMs, ports and directories).
    nm_memory_mb : int
        Memory each NodeManager declares to YARN. It may exceed the machine's RAM:
        containers rarely use what they reserve.
    nm_vcores : int
        Virtual cores each NodeManager declares; may exceed the physical cores so
        several executors fit on a small machine.
    base_port : int, optional
        First of a block of consecutive ports for the daemons. ``None`` lets the
        kernel choose free ports at every start.
    heap_mb : dict
        Java heap (``-Xmx``) in MB per daemon kind: namenode, datanode,
        resourcemanager, nodemanager.
    hadoop_version : str
        Version of the Hadoop artifacts fetched from Maven Central.
    isolated_hosts : bool
        Give every NodeManager, and the containers it launches, a Linux network
        namespace of its own: its own address in 198.18.0.0/15, hostname and hosts
        file, joined to the gateway by a bridge. Needs root. The NameNode, DataNode and
        ResourceManager then listen on the gateway's bridge address instead of 127.0.0.1.
    enforce_memory : bool
        Let NodeManagers kill containers whose processes use more physical memory than
        the container holds (counting shared memory, such as Ray's object store, once).
        Off by default, as in Hadoop without cgroups: the default setting
        ``yarn.nodemanager.resource.memory.enforced=true`` skips the NodeManager's own
        check and leaves limits to a cgroups OOM killer this machine does not have.
    preemption : bool
        Let the ResourceManager preempt containers of a queue over its guaranteed
        capacity when another queue under its own has pending requests, as shared
        clusters are set up (the capacity scheduler's proportional preemption, checked
        every second, a container killed 5 s after its application was told). Off by
        default, as in Hadoop.
    native_io : bool
        Load Hadoop's native I/O library, built from zoo_ray's own source with gcc
        (:mod:`zoo_ray.minicluster.native_io`), into the NodeManagers, as real clusters
        install Hadoop's. Without it a NodeManager runs one ``chmod`` process per file it
        localizes, and a shipped Python environment takes minutes to localize instead of
        seconds. Without gcc the NodeManagers run without it, with a warning.
    kerberos : bool
        Secure the cluster as production clusters are: a KDC of its own (MIT Kerberos),
        Kerberos on every RPC, SPNEGO on every web UI and REST API, a secured DataNode,
        queue ACLs (:mod:`zoo_ray.minicluster.security`). ``status`` names the realm's
        ``KRB5_CONFIG`` and the user's ``kinit``. Needs MIT Kerberos's tools and
        ``native_io`` (secure log aggregation refuses to run without Hadoop's native
        library); not with ``isolated_hosts`` yet.
    token_renew_interval_s, token_max_lifetime_s : int, optional
        With ``kerberos``: how long HDFS's and YARN's delegation tokens last before they
        must be renewed, and how long they can be renewed for (Hadoop's defaults: one day
        and seven days). Minutes instead show, in a test, what a job that outlives its
        tokens meets. At least 10 s (HDFS's floor); the renew interval at most the lifetime.
    gpus : int
        Pretend GPUs per NodeManager (:mod:`zoo_ray.minicluster.gpus`): YARN's GPU plugin
        discovers them with a stand-in ``nvidia-smi``, and schedules and accounts
        ``yarn.io/gpu`` for real. 0 (the default): no GPU resource at all.
    """

    nodemanagers: int = 2
    nm_memory_mb: int = 8192
    nm_vcores: int = 8
    base_port: int | None = None
    heap_mb: dict[str, int] = field(default_factory=_default_heaps)
    hadoop_version: str = HADOOP_VERSION
    isolated_hosts: bool = False
    enforce_memory: bool = False
    preemption: bool = False
    native_io: bool = True
    kerberos: bool = False
    token_renew_interval_s: int | None = None
    token_max_lifetime_s: int | None = None
    gpus: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.nodemanagers, int) or self.nodemanagers < 1:
            raise InvalidArgumentError(
                f"nodemanagers must be a whole number >= 1, got {self.nodemanagers!r}")
        if self.isolated_hosts and self.nodemanagers > 200:
            raise InvalidArgumentError(
                f"isolated_hosts gives each host an address in one /24; {self.nodemanagers} "
                "NodeManagers do not fit, use at most 200")
        if self.nm_memory_mb < 512:
            raise InvalidArgumentError(
                f"nm_memory_mb={self.nm_memory_mb} cannot hold a Spark executor; use at least 512"
            )
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise InvalidArgumentError(
                f"gpus={self.gpus!r}: pretend GPUs per NodeManager, a whole number >= 0")
        if self.nm_vcores < 1:
            raise InvalidArgumentError(f"nm_vcores must be >= 1, got {self.nm_vcores}")
        if self.base_port is not None and not 1024 <= self.base_port <= 65000:
            raise InvalidArgumentError(
                f"base_port={self.base_port} is outside 1024-65000; pick another, or leave it "
                "unset to let the kernel choose free ports"
            )
        if self.kerberos and self.isolated_hosts:
            raise InvalidArgumentError(
                "kerberos=True with isolated_hosts=True is not supported yet (each host would "
                "need principals of its own); use one of them")
        if self.kerberos and not self.native_io:
            raise InvalidArgumentError(
                "kerberos=True needs native_io=True: a secure NodeManager's log aggregation "
                "refuses to run without Hadoop's native library")
        self._check_token_lifetimes()
        self.heap_mb = {**_default_heaps(), **self.heap_mb}

    def _check_token_lifetimes(self) -> None:
        given = {name: getattr(self, name) for name in
                 ("token_renew_interval_s", "token_max_lifetime_s")
                 if getattr(self, name) is not None}
        if given and not self.kerberos:
            raise InvalidArgumentError(
                f"{', '.join(given)}: only a secure cluster has delegation tokens; set "
                "kerberos=True (`zoo-ray minicluster up --kerberos`), or leave them unset")
        for name, seconds in given.items():
            if not isinstance(seconds, int) or seconds < _MIN_TOKEN_S:
                raise InvalidArgumentError(
                    f"{name}={seconds!r}: use a whole number of seconds >= {_MIN_TOKEN_S} "
                    "(HDFS refuses shorter delegation tokens)")
        renew, lifetime = self.token_renew_interval_s, self.token_max_lifetime_s
        if renew is not None and lifetime is not None and renew > lifetime:
            raise InvalidArgumentError(
                f"token_renew_interval_s={renew} is longer than token_max_lifetime_s="
                f"{lifetime}: a token cannot be renewed past its lifetime; shorten the first")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this spec."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniClusterSpec:
        """The spec described by ``data`` (unknown keys are rejected)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidArgumentError(
                f"Unknown MiniClusterSpec fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)
