"""Isolated hosts for the local Hadoop: one Linux network namespace per NodeManager.

Each host is a network namespace with its own address from 198.18.0.0/15 (set aside
by RFC 2544 for tests), its own hostname and hosts file, joined to the gateway by a
veth pair on a bridge in the root namespace. The gateway (the driver, the NameNode,
the DataNode and the ResourceManager) sits on the bridge's address. Each namespace's
default route points at the bridge, because Ray finds a node's IP from the default
route; the bridge forwards nothing, so no packet leaves the machine.

Every name is derived from the cluster directory, so ``down`` or the next ``up``
removes what a killed run left behind. Runs as root on the machine that hosts the
local Hadoop.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import IsolatedHostsUnavailableError
from ..host import terminate

__all__ = ["GATEWAY_NAME", "HostNet", "Network", "check_capability", "launcher"]

logger = logging.getLogger(__name__)

#: RFC 2544's benchmarking range; every network of the local Hadoop is a /24 in it.
TEST_RANGE = ipaddress.ip_network("198.18.0.0/15")
_NETNS_ETC = Path("/etc/netns")
#: The gateway's name in every hosts file.
GATEWAY_NAME = "zr-gateway"
_FIX = ("Run `zoo-ray minicluster up --isolated-hosts` as root on Linux with iproute2 "
        "installed (`apt-get install iproute2`), or leave out --isolated-hosts to run every "
        "daemon on 127.0.0.1.")


@dataclass(frozen=True)
class HostNet:
    """One isolated host: its namespace, address, hostname and root-side veth."""

    netns: str
    ip: str
    hostname: str
    veth: str


@dataclass(frozen=True)
class Network:
    """The bridge, the gateway's address on it and the isolated hosts behind it.

    Round-trips through :meth:`to_dict` / :meth:`from_dict` (it is kept in the local
    Hadoop's state file).
    """

    tag: str
    bridge: str
    gateway_ip: str
    prefix_len: int
    hosts: tuple[HostNet, ...]

    @classmethod
    def plan(cls, cluster_dir: Path, count: int) -> Network:
        """The names and addresses for ``count`` hosts of the cluster in ``cluster_dir``."""
        digest = hashlib.sha256(str(cluster_dir).encode()).digest()
        tag = digest[:3].hex()
        # A /24 per cluster directory, so two local Hadoops on one machine do not clash.
        subnet = ipaddress.ip_network((int(TEST_RANGE.network_address) + digest[3] * 256 +
                                       (digest[4] & 1) * 65536, 24))
        base = int(subnet.network_address)
        hosts = tuple(
            HostNet(netns=f"zoo-ray-{tag}-h{i}", ip=str(ipaddress.ip_address(base + 11 + i)),
                    hostname=f"zr-host{i}", veth=f"zr{tag}v{i}")
            for i in range(count))
        return cls(tag=tag, bridge=f"zr{tag}br", gateway_ip=str(ipaddress.ip_address(base + 1)),
                   prefix_len=24, hosts=hosts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this network."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        """The network described by ``data``."""
        hosts = tuple(HostNet(**h) for h in data["hosts"])
        return cls(**{**data, "hosts": hosts})

    # ------------------------------------------------------------- create
    def create(self) -> None:
        """Make the bridge, the namespaces, their veths, routes and hosts files.

        Whatever an earlier run with the same names left behind is removed first.

        Raises
        ------
        IsolatedHostsUnavailableError
            A step was refused (with the command and its error).
        """
        self.destroy()
        try:
            self._create_bridge()
            for index, host in enumerate(self.hosts):
                self._create_host(index, host)
        except BaseException:
            self.destroy()
            raise
        logger.info("Isolated hosts on bridge %s (%s): %s", self.bridge, self.gateway_ip,
                    ", ".join(f"{h.hostname}={h.ip}" for h in self.hosts))

    def _create_bridge(self) -> None:
        subnet = ipaddress.ip_network(f"{self.gateway_ip}/{self.prefix_len}", strict=False)
        for line in _ip("-o", "-4", "addr", "show", check=False).splitlines():
            fields = line.split()
            if "inet" in fields and ipaddress.ip_interface(
                    fields[fields.index("inet") + 1]).ip in subnet:
                raise IsolatedHostsUnavailableError(
                    f"{subnet} is already used by interface {fields[1]} (another local Hadoop "
                    "with isolated hosts?). Stop that one, or start this one with another --dir "
                    "(each directory gets its own /24 of 198.18.0.0/15).")
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway_ip}/{self.prefix_len}", "dev", self.bridge)
        # Packets from the hosts are for the gateway or each other, never to be routed on.
        try:
            Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/forwarding").write_text("0\n")
        except OSError as exc:
            raise IsolatedHostsUnavailableError(
                f"Cannot switch forwarding off on {self.bridge} ({exc}). {_FIX}") from None
        _ip("link", "set", self.bridge, "up")

    def _create_host(self, index: int, host: HostNet) -> None:
        inner = f"zr{self.tag}i{index}"
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", host.netns)
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        inside = ["-n", host.netns]
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "link", "set", inner, "name", "eth0")
        _ip(*inside, "addr", "add", f"{host.ip}/{self.prefix_len}", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", "default", "via", self.gateway_ip)
        etc = _NETNS_ETC / host.netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(self.hosts_file())
        # No name server: the machine's would be unreachable from here (each lookup
        # would wait for its timeout), and queries must not leave the test network.
        (etc / "resolv.conf").write_text("# zoo_ray isolated host: names come from /etc/hosts\n"
                                         "options timeout:1 attempts:1\n")

    def hosts_file(self) -> str:
        """The ``/etc/hosts`` every isolated host sees.

        A host's address is its own canonical name and its hostname an alias: YARN
        names a NodeManager by the canonical name of its address, and Spark's
        executors by their NodeManager's. So the gateway, which has no entries for
        these hosts, reaches them by address, as on clusters without reverse DNS.
        """
        lines = ["127.0.0.1\tlocalhost", f"{self.gateway_ip}\t{self.gateway_ip}\t{GATEWAY_NAME}"]
        lines += [f"{h.ip}\t{h.ip}\t{h.hostname}" for h in self.hosts]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ destroy
    def destroy(self) -> None:
        """Remove every namespace, veth, bridge and hosts file with this network's names.

        Idempotent; finds leftovers by name, so it also cleans up after a crashed run.
        """
        for netns in _existing_netns():
            if netns.startswith(f"zoo-ray-{self.tag}-"):
                # A namespace lives on, nameless, while any process is inside it.
                _kill_inside(netns)
                _ip("netns", "del", netns, check=False)
        for link in _existing_links():
            if link.startswith(f"zr{self.tag}"):
                _ip("link", "del", link, check=False)
        if _NETNS_ETC.is_dir():
            for etc in _NETNS_ETC.glob(f"zoo-ray-{self.tag}-*"):
                shutil.rmtree(etc, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Namespaces, links and hosts directories with this network's names that exist now."""
        found = [n for n in _existing_netns() if n.startswith(f"zoo-ray-{self.tag}-")]
        found += [link for link in _existing_links() if link.startswith(f"zr{self.tag}")]
        if _NETNS_ETC.is_dir():
            found += [str(p) for p in _NETNS_ETC.glob(f"zoo-ray-{self.tag}-*")]
        return found


def launcher(host: HostNet) -> list[str]:
    """The argv prefix that runs a command as ``host``: its namespace, hostname and hosts file.

    ``ip netns exec`` enters the namespace and mounts its hosts file over ``/etc/hosts``;
    ``unshare --uts`` gives the command a hostname of its own, which ``hostexec`` sets
    before it execs the command (each step execs, so the PID is the command's).
    """
    return ["ip", "netns", "exec", host.netns, "unshare", "--uts", sys.executable, "-m",
            "zoo_ray.minicluster.hostexec", host.hostname, "--"]


def check_capability() -> None:
    """Fail at once, with the fix, when this process cannot make network namespaces.

    Raises
    ------
    IsolatedHostsUnavailableError
        Not Linux, not root, or iproute2's ``ip`` is missing.
    """
    if not sys.platform.startswith("linux"):
        raise IsolatedHostsUnavailableError(
            f"Isolated hosts need Linux network namespaces; this is {sys.platform}. {_FIX}")
    if os.geteuid() != 0:
        raise IsolatedHostsUnavailableError(
            f"Isolated hosts need root (CAP_NET_ADMIN and CAP_SYS_ADMIN to make network "
            f"namespaces, veths and a bridge); this process runs as uid {os.geteuid()}. {_FIX}")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            raise IsolatedHostsUnavailableError(f"`{tool}` is not on PATH. {_FIX}")


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=30)
    if check and result.returncode != 0:
        raise IsolatedHostsUnavailableError(
            f"`ip {' '.join(args)}` failed: {result.stderr.strip()}. {_FIX}")
    return result.stdout


def _kill_inside(netns: str) -> None:
    import psutil

    procs = []
    for pid in _ip("netns", "pids", netns, check=False).split():
        try:
            procs.append(psutil.Process(int(pid)))
        except psutil.NoSuchProcess:
            continue
    if procs:
        logger.warning("Stopping %d processes left in %s", len(procs), netns)
        terminate(procs)


def _existing_netns() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list", check=False).splitlines()
            if line.strip()]


def _existing_links() -> list[str]:
    names = []
    for line in _ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names

