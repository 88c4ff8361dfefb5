"""A private MIT Kerberos realm in one directory: prototype for `zoo-ray minicluster up --kerberos`.

Everything lives under ``root``: krb5.conf (for clients, via KRB5_CONFIG), kdc.conf (for the KDC
and kadmin.local, via KRB5_KDC_PROFILE), the database, the stash, the log, the keytabs. The KDC
runs in the foreground (``krb5kdc -n``) as our child, in its own process group, listening on
127.0.0.1 only, on one free port for both TCP and UDP. No secret ever goes on a command line:
the master password and user passwords are written to the tools' stdin.

Usage (CLI):
    python kdc.py up   DIR [--realm ZOO.LOCAL]   # create (once) + start; prints env to use
    python kdc.py down DIR                        # stop the KDC started by `up`
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KRB5KDC = "/usr/sbin/krb5kdc"
KDB5_UTIL = "/usr/sbin/kdb5_util"
KADMIN_LOCAL = "/usr/sbin/kadmin.local"
KINIT = "/usr/bin/kinit"
KLIST = "/usr/bin/klist"

KRB5_CONF = """\
[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    ignore_acceptor_hostname = false
    forwardable = true
    renew_lifetime = {renew}
    ticket_lifetime = {life}
    # TCP only: one port, no UDP fragmentation of large PAC-less tickets; Java honours this too.
    udp_preference_limit = 1
    default_ccache_name = FILE:{root}/ccache/krb5cc_%{{uid}}
    # Acceptors (the Python SPNEGO test server) keep their replay cache here, not in
    # /var/tmp/krb5_<uid>.rcache2 (MIT >= 1.18 key; file2 is the 1.18+ format).
    default_rcache_name = file2:{root}/rcache/acceptor.rcache2

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
        admin_server = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {realm}
    .localhost = {realm}
    127.0.0.1 = {realm}
"""

KDC_CONF = """\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {realm} = {{
        database_name = {root}/db/principal
        key_stash_file = {root}/db/stash
        acl_file = {root}/db/kadm5.acl
        kdc_listen = 127.0.0.1:{port}
        kdc_tcp_listen = 127.0.0.1:{port}
        max_life = {life}
        max_renewable_life = {renew}
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
        default_principal_flags = +preauth
    }}

[logging]
    kdc = FILE:{root}/log/krb5kdc.log
    admin_server = FILE:{root}/log/kadmin.log
    default = FILE:{root}/log/krb5lib.log
"""


def free_port_tcp_udp(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` (the KDC listens on both)."""
    for _ in range(50):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind((host, 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            udp.close()
            tcp.close()
    raise RuntimeError("no port free for both TCP and UDP")


class MitKdc:
    def __init__(self, root: str | os.PathLike, realm: str = "ZOO.LOCAL",
                 life: str = "10h", renew: str = "7d") -> None:
        self.root = Path(root).resolve()
        self.realm = realm
        self.life = life
        self.renew = renew
        self.state_path = self.root / "kdc.json"
        self.proc: subprocess.Popen | None = None

    # -------------------------------------------------------------- env
    @property
    def krb5_conf(self) -> Path:
        return self.root / "krb5.conf"

    @property
    def kdc_conf(self) -> Path:
        return self.root / "kdc.conf"

    def env(self, **extra: str) -> dict[str, str]:
        """This environment with the realm's client and KDC profiles, and never /etc/krb5.conf."""
        env = dict(os.environ)
        env["KRB5_CONFIG"] = str(self.krb5_conf)
        env["KRB5_KDC_PROFILE"] = str(self.kdc_conf)
        env.update(extra)
        return env

    def port(self) -> int:
        return json.loads(self.state_path.read_text())["port"]

    # -------------------------------------------------------------- create
    def create(self, port: int | None = None) -> None:
        """Write the profiles and create the database (master key random, via stdin)."""
        port = port or free_port_tcp_udp()
        for sub in ("db", "log", "keytabs", "ccache", "rcache"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        fmt = dict(realm=self.realm, port=port, root=self.root, life=self.life, renew=self.renew)
        self.krb5_conf.write_text(KRB5_CONF.format(**fmt))
        self.kdc_conf.write_text(KDC_CONF.format(**fmt))
        (self.root / "db" / "kadm5.acl").write_text("")
        master = secrets.token_urlsafe(24)
        # -s: write a stash file so krb5kdc starts without asking. Password on stdin, twice.
        self._run([KDB5_UTIL, "-r", self.realm, "create", "-s"], stdin=f"{master}\n{master}\n")
        self.state_path.write_text(json.dumps({"realm": self.realm, "port": port, "pid": None}))

    def _run(self, argv: list[str], stdin: str = "", env: dict | None = None) -> str:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                env=env or self.env(), timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr}"
                               f"{result.stdout}")
        return result.stdout

    def kadmin(self, *queries: str, stdin: str = "") -> str:
        """kadmin.local, each query one -q (queries never carry secrets)."""
        out = ""
        for q in queries:
            out += self._run([KADMIN_LOCAL, "-r", self.realm, "-q", q], stdin=stdin)
        return out

    def add_service(self, principal: str, keytab: Path | None = None) -> Path:
        """A random-key principal (e.g. ``nn/localhost``) exported to a 0600 keytab."""
        full = principal if "@" in principal else f"{principal}@{self.realm}"
        keytab = keytab or self.root / "keytabs" / (principal.replace("/", "_") + ".keytab")
        self.kadmin(f"addprinc -randkey {full}")
        return self.export(keytab, full)

    def export(self, keytab: Path, *principals: str) -> Path:
        # ktadd creates the file with the process umask; create it 0600 ourselves first is not
        # allowed (kadmin refuses a zero-length non-keytab file), so tighten umask instead.
        old = os.umask(0o077)
        try:
            for p in principals:
                self.kadmin(f"ktadd -k {keytab} {p}")
        finally:
            os.umask(old)
        os.chmod(keytab, 0o600)
        return keytab

    def add_user(self, name: str, password: str) -> None:
        """A user principal with a password (typed on stdin, twice, as a person would)."""
        full = name if "@" in name else f"{name}@{self.realm}"
        self._run([KADMIN_LOCAL, "-r", self.realm, "-q", f"addprinc {full}"],
                  stdin=f"{password}\n{password}\n")

    def export_user_keytab(self, name: str, keytab: Path) -> Path:
        """Keytab for a password user *without* changing its key (-norandkey, kadmin.local only)."""
        full = name if "@" in name else f"{name}@{self.realm}"
        old = os.umask(0o077)
        try:
            self.kadmin(f"ktadd -norandkey -k {keytab} {full}")
        finally:
            os.umask(old)
        os.chmod(keytab, 0o600)
        return keytab

    # -------------------------------------------------------------- run
    def start(self, timeout: float = 10.0) -> int:
        """Start ``krb5kdc -n`` (foreground) as a child in its own session; wait until it answers."""
        log = open(self.root / "log" / "krb5kdc.out", "ab")
        self.proc = subprocess.Popen([KRB5KDC, "-n", "-r", self.realm], env=self.env(),
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        state = json.loads(self.state_path.read_text())
        state["pid"] = self.proc.pid
        self.state_path.write_text(json.dumps(state))
        deadline = time.monotonic() + timeout
        port = state["port"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"krb5kdc exited {self.proc.returncode}; see {self.root}/log")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return self.proc.pid
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("krb5kdc did not listen")

    def stop(self) -> None:
        pid = None
        if self.proc is not None:
            pid = self.proc.pid
        elif self.state_path.exists():
            pid = json.loads(self.state_path.read_text()).get("pid")
        if not pid:
            return
        try:
            os.killpg(pid, signal.SIGTERM)  # its own session: pgid == pid
        except ProcessLookupError:
            return
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                self.proc.wait()
        state = json.loads(self.state_path.read_text())
        state["pid"] = None
        self.state_path.write_text(json.dumps(state))

    # -------------------------------------------------------------- client
    def kinit_password(self, principal: str, password: str, ccache: Path) -> None:
        self._run([KINIT, principal], stdin=password + "\n",
                  env=self.env(KRB5CCNAME=f"FILE:{ccache}"))

    def kinit_keytab(self, principal: str, keytab: Path, ccache: Path) -> None:
        self._run([KINIT, "-kt", str(keytab), principal], env=self.env(KRB5CCNAME=f"FILE:{ccache}"))

    def klist(self, ccache: Path) -> str:
        return self._run([KLIST, "-e", "-f"], env=self.env(KRB5CCNAME=f"FILE:{ccache}"))


def main(argv: list[str]) -> None:
    cmd, root = argv[0], argv[1]
    kdc = MitKdc(root)
    if cmd == "up":
        if not kdc.state_path.exists():
            kdc.create()
        pid = kdc.start()
        print(f"export KRB5_CONFIG={kdc.krb5_conf}\n# krb5kdc pid {pid} port {kdc.port()}")
        # `up` in the CLI detaches: the KDC runs in its own session, `down` kills it by pid.
    elif cmd == "down":
        kdc.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
