"""MiniCluster: a real single-machine Hadoop (HDFS + YARN) from Maven Central jars.

Each daemon is its own JVM in its own process group: one NameNode, one DataNode,
one ResourceManager and N NodeManagers, each NodeManager with its own ports and
local/log directories. Everything lives under one directory, whose
``state.json`` records what runs, so ``zoo-ray minicluster down`` from another
shell stops exactly what ``up`` started, and nothing else. Runs on the machine that
hosts the local Hadoop (the gateway of tests and the demo). :class:`MiniCluster` is
the face of its parts: :mod:`.state` (the state file), :mod:`.bringup` (start and
wait), :mod:`.teardown` (stop) and :mod:`.client` (``hadoop fs``, ``yarn logs``).
"""
from __future__ import annotations

import getpass
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.request import OpenerDirector

from ..cache import cache_root
from ..errors import MiniClusterStateError, ZooRayError
from ..host import find_java_home, wait_until
from ..spnego import Credentials, hadoop_opener
from ..yarn import FINAL_STATES, ResourceManager
from .artifacts import hadoop_jars
from .bringup import spawn_watchdog, start_daemons, wait_ready
from .client import run_client
from .config import HOST
from .netns import GATEWAY_NAME, Network, check_capability
from .security import HOSTNAME, Security
from .spec import MiniClusterSpec
from .state import StateFile
from .teardown import stop_all, stop_watchdog

__all__ = ["MiniCluster", "default_dir"]

logger = logging.getLogger(__name__)


def default_dir() -> Path:
    """Where the local Hadoop lives unless told otherwise: ``<zoo_ray cache>/minicluster``."""
    return cache_root() / "minicluster"


class MiniCluster:
    """A local Hadoop: HDFS and YARN daemons on this machine, bound to 127.0.0.1, or with
    each NodeManager on an isolated host of its own (``spec.isolated_hosts``).

    Parameters
    ----------
    dir : str or Path, optional
        Directory for configuration, HDFS data, YARN local and log dirs and the state
        file. Defaults to :func:`default_dir`.
    spec : MiniClusterSpec, optional
        What to start. Defaults to the spec of the cluster running in ``dir``, else
        ``MiniClusterSpec()`` (two NodeManagers).

    Examples
    --------
    >>> with MiniCluster("/tmp/hadoop") as cluster:          # doctest: +SKIP
    ...     os.environ["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
    ...     ...  # run Spark on YARN

    Used as a context manager, it starts the cluster on enter and, if it started it,
    stops it on exit; a cluster that was already running is reused and left running.
    """

    def __init__(
        self, dir: str | os.PathLike[str] | None = None, spec: MiniClusterSpec | None = None
    ) -> None:
        self.dir = Path(dir).expanduser() if dir else default_dir()
        self.dir = self.dir.resolve()
        self._state = StateFile(self.dir)
        state = self._state.read()
        self._requested_spec = spec
        if spec is None:
            spec = MiniClusterSpec.from_dict(state["spec"]) if state else MiniClusterSpec()
        self.spec = spec
        self._started_here = False

    @property
    def ports(self) -> dict[str, int]:
        """The ports of the running (or last started) cluster, by daemon endpoint."""
        state = self._state.read()
        if not state:
            raise MiniClusterStateError(
                f"No local Hadoop has been started in {self.dir}; run `zoo-ray minicluster up`."
            )
        return state["ports"]

    # -------------------------------------------------------------- endpoints
    @property
    def network(self) -> Network | None:
        """The isolated hosts of the running (or last started) cluster, or None."""
        state = self._state.read() or {}
        return Network.from_dict(state["network"]) if state.get("network") else None

    @property
    def security(self) -> Security | None:
        """What clients of the running (or last started) secure cluster need, or None."""
        state = self._state.read() or {}
        return Security.from_dict(state["security"]) if state.get("security") else None

    @property
    def credentials(self) -> Credentials | None:
        """The identity this object's own calls present to a secure cluster: the realm's
        user, from its keytab, in a ticket cache of the cluster's (never the caller's).
        The realm joins this process's ``KRB5_CONFIG`` (see
        :meth:`~zoo_ray.minicluster.kdc.Realm.make_known`)."""
        security = self.security
        if security is None:
            return None
        security.realm.make_known()
        return Credentials(f"FILE:{self.dir / 'security' / 'krb5cc'}", security.user_keytab)

    @property
    def host(self) -> str:
        """The address of HDFS and the ResourceManager: 127.0.0.1, the gateway's bridge
        address with isolated hosts, or ``localhost`` on a secure cluster (its principals
        name the host)."""
        network = self.network
        if network:
            return network.gateway_ip
        return HOSTNAME if self.security else HOST

    @property
    def hadoop_conf_dir(self) -> Path:
        """The client configuration directory: use it as ``HADOOP_CONF_DIR``."""
        return self.dir / "conf"

    @property
    def default_fs(self) -> str:
        """``hdfs://<host>:<port>``, the cluster's default file system."""
        return f"hdfs://{self.host}:{self.ports['nn_rpc']}"

    @property
    def resource_manager(self) -> ResourceManager:
        """A REST client of the cluster's ResourceManager (as :attr:`credentials`)."""
        return ResourceManager(f"{self.host}:{self.ports['rm_web']}",
                               credentials=self.credentials)

    @property
    def namenode_web(self) -> str:
        """The NameNode's web endpoint (HTTPS on a secure cluster)."""
        scheme = "https" if self.security else "http"
        return f"{scheme}://{self.host}:{self.ports['nn_http']}"

    def _opener(self) -> OpenerDirector:
        security = self.security
        return hadoop_opener(self.credentials, security.ca_file if security else None)

    @property
    def started(self) -> bool:
        """Whether daemons were started and not stopped by :meth:`down` (some may have died)."""
        return bool(self._state.daemons())

    @property
    def running(self) -> bool:
        """Whether every daemon recorded in the state file is alive."""
        daemons = self._state.daemons()
        return bool(daemons) and all(d.alive for d in daemons)

    # ---------------------------------------------------------------- up/down
    def up(self, timeout: float = 180.0, owner_pid: int | None = None) -> MiniCluster:
        """Start the daemons and wait until HDFS and every NodeManager are ready.

        Reuses a cluster already running in ``dir`` (with the same spec).

        Parameters
        ----------
        timeout : float
            Seconds to wait for readiness before stopping everything and raising.
        owner_pid : int, optional
            Stop the cluster when this process dies, even if it never calls
            :meth:`down` (``kill -9``, a crashed notebook kernel). The context
            manager passes its own PID.

        Raises
        ------
        MiniClusterStateError
            A cluster with another spec runs in ``dir``, or only part of one runs.
        JavaNotFoundError, MavenNotFoundError, ArtifactFetchError
            Java is missing, or the jars cannot be fetched.
        PortInUseError
            A port the daemons need is taken.
        IsolatedHostsUnavailableError
            ``spec.isolated_hosts`` is set but this process cannot make network
            namespaces (not root, no iproute2).
        DaemonStartError
            A daemon died or the cluster did not become ready within ``timeout``.
        KerberosError, KerberosUnavailableError
            ``spec.kerberos`` is set and MIT Kerberos is missing, or its realm, keytabs or
            certificate could not be made.
        """
        if self.spec.isolated_hosts:
            check_capability()
        with self._state.lock():
            if self._reuse_running():
                return self
            # A run whose daemons all died may have left its watchdog, which would stop
            # this cluster when that run's owner ends.
            stop_watchdog((self._state.read() or {}).get("watchdog"))
            started = time.monotonic()
            java_home = find_java_home()
            jars = hadoop_jars(self.spec.hadoop_version)
            network = self._planned_network()
            state: dict[str, Any] = {
                "spec": self.spec.to_dict(), "ports": {}, "daemons": [],
                "java_home": str(java_home), "jars": str(jars),
                "network": network.to_dict() if network else None,
            }
            self._state.write(state)
            try:
                start_daemons(self._state, self.spec, state, network, java_home, jars)
                if owner_pid is not None:
                    state["watchdog"] = spawn_watchdog(owner_pid, self.dir).to_dict()
                    self._state.write(state)
                self._wait_ready(timeout)
                security = self.security
                if security:
                    self._lay_out_hdfs(security)
            except BaseException:
                self._stop_all()
                raise
            self._started_here = True
            logger.info(
                "Local Hadoop is up in %.1fs: HADOOP_CONF_DIR=%s", time.monotonic() - started,
                self.hadoop_conf_dir,
            )
            return self

    def _lay_out_hdfs(self, security: Security) -> None:
        """What a secure cluster's admins make for users, as HDFS's superuser: ``/tmp``
        open to all (YARN aggregates logs under it), and the user's home."""
        home = f"/user/{security.user.split('@')[0]}"
        for args in (["-mkdir", "-p", "/tmp/logs", home], ["-chmod", "1777", "/tmp", "/tmp/logs"],
                     ["-chown", security.user.split("@")[0], home]):
            run_client(self._state, self.hadoop_conf_dir, "org.apache.hadoop.fs.FsShell",
                       args, 120.0, principal=security.superuser)

    def _planned_network(self) -> Network | None:
        if not self.spec.isolated_hosts:
            return None
        return Network.plan(self.dir, self.spec.nodemanagers)

    def _reuse_running(self) -> bool:
        daemons = self._state.daemons()
        if not daemons:
            return False
        alive = [d for d in daemons if d.alive]
        if not alive:
            return False
        state = self._state.read() or {}
        running_spec = MiniClusterSpec.from_dict(state["spec"])
        if len(alive) < len(daemons):
            dead = [d for d in daemons if not d.alive]
            raise MiniClusterStateError(
                f"The local Hadoop in {self.dir} is only partly running: "
                f"{', '.join(d.name for d in dead)} exited. Run `zoo-ray minicluster down"
                f" --dir {self.dir}` and `up` again. Last log of {dead[0].name}:\n"
                f"{dead[0].log_tail()}"
            )
        if self._requested_spec is not None and self._requested_spec != running_spec:
            raise MiniClusterStateError(
                f"A local Hadoop with another spec ({running_spec}) already runs in {self.dir}. "
                f"Run `zoo-ray minicluster down --dir {self.dir}` first, or use another --dir."
            )
        self.spec = running_spec
        logger.info("Reusing the local Hadoop already running in %s", self.dir)
        self._wait_ready(60.0)
        return True

    def _wait_ready(self, timeout: float) -> None:
        wait_ready(self._state, self.namenode_web, self.resource_manager, self.spec.nodemanagers,
                   timeout, self._opener())

    def down(self) -> None:
        """Stop every daemon this directory's state records, and their containers.

        Safe to call when nothing runs. Afterwards no process started from ``dir``
        remains and every port is free.
        """
        with self._state.lock():
            self._stop_all()

    def _stop_all(self) -> None:
        stop_all(self._state)
        self._started_here = False

    def __enter__(self) -> MiniCluster:
        was_running = self.running
        self.up(owner_pid=os.getpid())
        self._started_here = not was_running
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started_here:
            self.down()

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """A JSON-serialisable report: daemons and their PIDs, endpoints, NodeManagers."""
        state = self._state.read()
        report: dict[str, Any] = {"dir": str(self.dir), "running": self.running}
        if not state or not state["daemons"]:
            report["running"] = False
            return report
        report["daemons"] = {
            d.name: {"pid": d.pid, "alive": d.alive, "log": d.log} for d in self._state.daemons()
        }
        report["hadoop_conf_dir"] = str(self.hadoop_conf_dir)
        report["default_fs"] = self.default_fs
        report["resourcemanager"] = f"http://{self.resource_manager.webapp_address}"
        report["namenode"] = self.namenode_web
        security = self.security
        if security:
            report["kerberos"] = {
                "realm": security.realm.name, "krb5_config": str(security.realm.krb5_conf),
                "user": security.user, "keytab": security.user_keytab,
                "kinit": security.kinit_command(),
            }
        network = self.network
        if network:
            report["gateway"] = {"hostname": GATEWAY_NAME, "ip": network.gateway_ip,
                                 "bridge": network.bridge}
            report["hosts"] = [{"hostname": h.hostname, "ip": h.ip, "netns": h.netns}
                               for h in network.hosts]
        if report["running"]:
            try:
                report["nodemanagers"] = [
                    {"id": n["id"], "state": n["state"]} for n in self.resource_manager.nodes()
                ]
            except ZooRayError as exc:
                report["nodemanagers"] = str(exc)
        return report

    # ------------------------------------------------------------ client tools
    def fs(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``hadoop fs <args>`` against the cluster's HDFS and return its output.

        Examples
        --------
        >>> cluster.fs("-ls", "/")   # doctest: +SKIP
        """
        return run_client(self._state, self.hadoop_conf_dir, "org.apache.hadoop.fs.FsShell",
                          list(args), timeout)

    def app_logs(self, app_id: str, wait: float = 120.0) -> str:
        """The aggregated container logs of a YARN application, like ``yarn logs``.

        Waits up to ``wait`` seconds for an ended application's logs to be
        aggregated to HDFS first.

        Raises
        ------
        ZooRayError
            The logs could not be read (with the client's error output).
        """
        def aggregated_or_running() -> bool:
            app = self.resource_manager.app(app_id)
            return app["state"] not in FINAL_STATES or app.get("logAggregationStatus") in (
                "SUCCEEDED", "FAILED", "TIME_OUT", "DISABLED")

        wait_until(aggregated_or_running, wait, interval=1.0)
        return run_client(
            self._state, self.hadoop_conf_dir, "org.apache.hadoop.yarn.client.cli.LogsCLI",
            ["-applicationId", app_id, "-appOwner", getpass.getuser()], timeout=wait,
        )
