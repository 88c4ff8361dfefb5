"""A private Kerberos realm for the local Hadoop: an MIT KDC of its own, principals, keytabs.

Everything lives in one directory of mode 0700: ``krb5.conf`` for clients (``KRB5_CONFIG``;
JVMs take it as ``-Djava.security.krb5.conf``, as Java does not read ``KRB5_CONFIG``),
``kdc.conf`` for the KDC and ``kadmin.local`` (``KRB5_KDC_PROFILE``), the database, the logs
and the keytabs (0600). The KDC (``krb5kdc -n``) is a foreground process in its own process
group, listening on 127.0.0.1 only, on one port for TCP and UDP. No secret goes on a command
line: the master password and users' passwords are written to the tools' stdin.

MIT Kerberos rather than Hadoop's MiniKdc (Apache Kerby in a JVM): it is what gateways run
(the ``kinit`` and ``klist`` users type, the ``libgssapi_krb5`` zoo_ray's SPNEGO client calls),
it starts in milliseconds, and ``kadmin.local`` adds any principal at any time.
Runs on the machine that starts the local Hadoop.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import DaemonStartError, KerberosError, KerberosUnavailableError
from .daemons import Daemon

__all__ = ["Kdc", "Realm", "REALM"]

#: The local Hadoop's realm.
REALM = "ZOO.LOCAL"

#: The packages holding the tools, on Debian and Ubuntu (RHEL: krb5-server, krb5-workstation).
PACKAGES = "krb5-kdc krb5-admin-server krb5-user"

_TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist")

_KRB5_CONF = """\
[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    forwardable = true
    ticket_lifetime = {ticket_lifetime}
    renew_lifetime = {renew_lifetime}
    # TCP only (MIT and Java clients): one port, and no fragmented UDP replies.
    udp_preference_limit = 1
    # Acceptors started with this file keep their replay cache here, not in /var/tmp.
    default_rcache_name = file2:{dir}/rcache/acceptor.rcache2

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
        admin_server = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {realm}
    .localhost = {realm}
"""

_KDC_CONF = """\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {realm} = {{
        database_name = {dir}/db/principal
        key_stash_file = {dir}/db/stash
        acl_file = {dir}/db/kadm5.acl
        max_life = {ticket_lifetime}
        max_renewable_life = {renew_lifetime}
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
        default_principal_flags = +preauth
    }}

[logging]
    kdc = FILE:{dir}/log/krb5kdc.log
    admin_server = FILE:{dir}/log/kadmin.log
    default = FILE:{dir}/log/krb5lib.log
"""


@dataclass(frozen=True)
class Realm:
    """Where a realm's KDC answers and its files are. Round-trips through :meth:`to_dict`.

    Parameters
    ----------
    name : str
        The realm, such as ``ZOO.LOCAL``.
    port : int
        The KDC's port on 127.0.0.1 (TCP and UDP).
    dir : str
        The directory holding the realm's profiles, database, logs and keytabs.
    """

    name: str
    port: int
    dir: str

    @property
    def krb5_conf(self) -> Path:
        """The clients' profile: ``KRB5_CONFIG`` for MIT tools and Python, and
        ``-Djava.security.krb5.conf`` for JVMs."""
        return Path(self.dir) / "krb5.conf"

    @property
    def keytab_dir(self) -> Path:
        """Where the realm keeps the keytabs of principals added without one."""
        return Path(self.dir) / "keytabs"

    def principal(self, name: str) -> str:
        """``name`` qualified with this realm (unchanged if it names one)."""
        return name if "@" in name else f"{name}@{self.name}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with this realm's profiles."""
        env = dict(os.environ if base is None else base)
        env["KRB5_CONFIG"] = str(self.krb5_conf)
        env["KRB5_KDC_PROFILE"] = str(Path(self.dir) / "kdc.conf")
        return env

    def make_known(self) -> None:
        """Let this process's Kerberos library find the realm: ``KRB5_CONFIG`` names its
        ``krb5.conf`` (set if unset), as a gateway's ``/etc/krb5.conf`` names its realm.

        Raises
        ------
        KerberosError
            ``KRB5_CONFIG`` names another file: this process is set up for another realm.
        """
        current = os.environ.get("KRB5_CONFIG")
        if not current:
            os.environ["KRB5_CONFIG"] = str(self.krb5_conf)
        elif current != str(self.krb5_conf):
            raise KerberosError(
                f"KRB5_CONFIG={current} is another realm's configuration, and the local "
                f"Hadoop's realm {self.name} is in {self.krb5_conf}. Set "
                f"KRB5_CONFIG={self.krb5_conf} (or unset it) in this process.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Realm:
        """The record described by ``data``."""
        return cls(**data)


def check_tools() -> None:
    """Raise :class:`~zoo_ray.errors.KerberosUnavailableError` naming the packages to
    install if MIT Kerberos's KDC or client tools are missing."""
    missing = [tool for tool in _TOOLS if not _which(tool)]
    if missing:
        raise KerberosUnavailableError(
            f"The local Hadoop's Kerberos realm needs MIT Kerberos, and {', '.join(missing)} "
            f"cannot be found. Install it: apt-get install -y {PACKAGES} (on RHEL: dnf "
            "install krb5-server krb5-workstation).")


def _which(tool: str) -> str | None:
    # kdb5_util, krb5kdc and kadmin.local live in /usr/sbin, often not on a user's PATH.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


class Kdc:
    """A realm's database and KDC in ``dir``.

    Parameters
    ----------
    dir : path
        The realm's directory (created with mode 0700).
    realm : str
        The realm's name.
    ticket_lifetime, renew_lifetime : str
        Kerberos durations (``10h``, ``7d``, ``5m``): the longest ticket the KDC issues,
        and how long a ticket may be renewed.
    """

    def __init__(self, dir: str | os.PathLike, realm: str = REALM,
                 ticket_lifetime: str = "10h", renew_lifetime: str = "7d") -> None:
        self.dir = Path(dir).resolve()
        self.realm = realm
        self.ticket_lifetime = ticket_lifetime
        self.renew_lifetime = renew_lifetime

    def create(self, port: int | None = None) -> Realm:
        """Write the profiles and create the database with a random master key.

        Parameters
        ----------
        port : int, optional
            The KDC's port; by default one free for both TCP and UDP.

        Raises
        ------
        KerberosUnavailableError
            MIT Kerberos is not installed.
        """
        check_tools()
        for sub in ("db", "log", "keytabs", "rcache"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        realm = Realm(self.realm, port or _free_tcp_udp_port(), str(self.dir))
        values = dict(realm=self.realm, port=realm.port, dir=self.dir,
                      ticket_lifetime=self.ticket_lifetime, renew_lifetime=self.renew_lifetime)
        realm.krb5_conf.write_text(_KRB5_CONF.format(**values))
        (self.dir / "kdc.conf").write_text(_KDC_CONF.format(**values))
        (self.dir / "db" / "kadm5.acl").write_text("")
        master = secrets.token_urlsafe(24)
        # -s writes a stash file, so the KDC starts unattended.
        _run(realm, ["kdb5_util", "-r", self.realm, "create", "-s"], stdin=f"{master}\n" * 2)
        return realm

    def start(self, realm: Realm, timeout: float = 10.0) -> Daemon:
        """Start the KDC and wait until it accepts connections.

        Returns
        -------
        Daemon
            The KDC's record; :meth:`Daemon.stop` stops it.

        Raises
        ------
        DaemonStartError
            The KDC exited or did not listen within ``timeout`` (its log's tail attached).
        """
        argv = [str(_which("krb5kdc")), "-n", "-r", realm.name]
        kdc = Daemon.start("krb5kdc", argv, self.dir / "log", realm.env(), self.dir)
        # Ready when it says so: a connect could reach another process holding the port.
        ready = f"krb5kdc[{kdc.pid}](info): commencing operation"
        log = Path(kdc.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not kdc.alive:
                raise DaemonStartError(f"krb5kdc exited at start:\n{kdc.log_tail()}")
            if log.exists() and ready in log.read_text(errors="replace"):
                return kdc
            time.sleep(0.02)
        kdc.stop(grace=2.0)
        raise DaemonStartError(f"krb5kdc did not start within {timeout:.0f}s:\n"
                               f"{kdc.log_tail()}")

    @staticmethod
    def add_service(realm: Realm, principal: str, keytab: Path | None = None) -> Path:
        """A principal with a random key (``nn/localhost``), added to ``keytab``.

        Parameters
        ----------
        realm : Realm
            The realm (its KDC's database is written; the KDC need not run).
        principal : str
            The principal, with or without ``@REALM``.
        keytab : Path, optional
            The keytab (0600) to add its keys to; by default one of its own in the
            realm's directory.

        Returns
        -------
        Path
            The keytab.

        Raises
        ------
        KerberosError
            The principal exists already, or kadmin failed (its message attached).
        """
        full = realm.principal(principal)
        _run(realm, ["kadmin.local", "-r", realm.name, "-q", f"addprinc -randkey {full}"])
        return Kdc.export_keytab(realm, full, keytab or realm.keytab_dir / _keytab_name(full))

    @staticmethod
    def add_user(realm: Realm, name: str, password: str) -> str:
        """A user principal with a password (typed twice on stdin, as a person would).

        Parameters
        ----------
        realm : Realm
            The realm.
        name : str
            The user, with or without ``@REALM``.
        password : str
            Its password (never on a command line).

        Returns
        -------
        str
            The full principal name.
        """
        full = realm.principal(name)
        _run(realm, ["kadmin.local", "-r", realm.name, "-q", f"addprinc {full}"],
             stdin=f"{password}\n" * 2)
        return full

    @staticmethod
    def export_keytab(realm: Realm, principal: str, keytab: Path) -> Path:
        """Add ``principal``'s current keys to ``keytab`` (0600) without changing them, so
        its password (for a user) and the keytabs it is already in keep working.

        Parameters
        ----------
        realm : Realm
            The realm.
        principal : str
            The principal, with or without ``@REALM``.
        keytab : Path
            The keytab to create or add to.

        Returns
        -------
        Path
            ``keytab``.
        """
        keytab.parent.mkdir(parents=True, exist_ok=True)
        # kadmin's own parser takes a quoted path (a directory name may hold spaces).
        _run(realm, ["kadmin.local", "-r", realm.name, "-q",
                     f'ktadd -norandkey -k "{keytab}" {realm.principal(principal)}'])
        os.chmod(keytab, 0o600)
        return keytab

    @staticmethod
    def kinit(realm: Realm, principal: str, keytab: Path, ccache: Path) -> None:
        """Put a fresh ticket of ``principal``, from ``keytab``, into the cache ``ccache``.

        Parameters
        ----------
        realm : Realm
            The realm whose KDC issues it.
        principal : str
            Who logs in.
        keytab : Path
            Its keytab.
        ccache : Path
            The ticket cache file (written 0600).

        Raises
        ------
        KerberosError
            kinit failed (its message attached) or could not run.
        """
        env = realm.env()
        env["KRB5CCNAME"] = f"FILE:{ccache}"
        try:
            result = subprocess.run([_which("kinit") or "kinit", "-kt", str(keytab),
                                     realm.principal(principal)],
                                    capture_output=True, text=True, env=env, timeout=60,
                                    umask=0o077)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KerberosError(f"kinit failed to run: {exc}. Install krb5-user.") from None
        if result.returncode != 0:
            raise KerberosError(f"kinit -kt {keytab} {principal} failed: "
                                f"{result.stderr.strip()}")


def _keytab_name(principal: str) -> str:
    return principal.split("@")[0].replace("/", "_") + ".keytab"


def _run(realm: Realm, argv: list[str], stdin: str = "") -> str:
    tool = _which(argv[0]) or argv[0]
    try:
        # umask 077: the keytabs kadmin writes are born private.
        result = subprocess.run([tool, *argv[1:]], input=stdin, capture_output=True,
                                text=True, env=realm.env(), timeout=60, umask=0o077)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KerberosError(f"{argv[0]} failed to run for the realm in {realm.dir}: {exc}. "
                            "Check MIT Kerberos's installation.") from None
    # kadmin.local exits 0 after a failed query and says so on stderr, where it also notes
    # that a new principal has no password policy (not a failure).
    problems = [line for line in result.stderr.splitlines()
                if line.strip() and not line.startswith("No policy specified")]
    if result.returncode != 0 or (argv[0] == "kadmin.local" and problems):
        raise KerberosError(
            f"{argv[0]} {argv[-1] if argv[0] == 'kadmin.local' else ' '.join(argv[1:])} "
            f"failed in the realm in {realm.dir}: {' '.join(problems)[-2000:]}")
    return result.stdout


def _free_tcp_udp_port(host: str = "127.0.0.1", tries: int = 50) -> int:
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return int(port)
    raise KerberosUnavailableError(f"No port on {host} is free for both TCP and UDP after "
                                   f"{tries} tries; free some ports and retry.")
