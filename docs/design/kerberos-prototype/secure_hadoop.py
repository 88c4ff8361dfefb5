"""A Kerberized single-host Hadoop (HDFS + YARN) with its own MIT KDC: the prototype of
`zoo-ray minicluster up --kerberos`.

    python secure_hadoop.py up   DIR     # KDC, principals, keytabs, TLS, conf, daemons, HDFS dirs
    python secure_hadoop.py env  DIR     # the shell lines a gateway user needs
    python secure_hadoop.py down DIR     # stop every process `up` started (by PID), KDC last

Daemons must only run while holding /work/e2e.lock on the shared machine.

It mirrors zoo_ray/minicluster (java_argv, main classes, per-daemon conf/log dirs, the jar cache
~/.cache/zoo_ray/hadoop-3.5.0/lib) without importing it, and renders its configuration from a copy
of /work/main/hadoop_conf_example plus the secure keys (SECURE_* below).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from kdc import MitKdc  # noqa: E402

REALM = "ZOO.LOCAL"
HOST = "127.0.0.1"        # every daemon binds here
FQDN = "localhost"        # what Java's getCanonicalHostName() gives for 127.0.0.1 -> _HOST
# Addresses in the conf are host names, as on real clusters: several Hadoop web servers
# substitute _HOST in HTTP/_HOST with the *string* of the bind address, so an IP in the conf
# makes them log in as HTTP/127.0.0.1 while clients ask for HTTP/localhost.
ADDR = os.environ.get("SECURE_ADDR", FQDN)
JARS = Path(os.environ.get("ZOO_RAY_HADOOP_JARS",
                           Path.home() / ".cache/zoo_ray/hadoop-3.5.0/lib"))
TEMPLATES = Path(os.environ.get("ZOO_RAY_TEMPLATES", "/work/main/hadoop_conf_example"))
JAVA = Path(shutil.which("java")).resolve()
JAVA_HOME = JAVA.parent.parent
# The user principal is named after the OS user running the local Hadoop (root in CI). With the
# DefaultContainerExecutor containers run as the NodeManager's OS user, and secure log aggregation
# (SecureIOUtils) insists that every container log file is owned by the application's user: only
# a user whose short name is that OS user gets its logs aggregated.
import getpass
USER = os.environ.get("SECURE_USER", getpass.getuser())
# libhadoop.so: with Kerberos on, the NodeManager's log aggregation and container-log pages go
# through SecureIOUtils, which refuses to work without Hadoop's native library ("Secure IO is not
# possible without native code extensions") and kills the NodeManager. Maven's hadoop-common has
# no native code, and a libhadoop.so from another Hadoop version does not link (3.3.5's lacks
# NativeIO$POSIX.initNativePosix). nativeshim/ is our own minimal JNI library (NativeIO fstat/
# open/stat/chmod/rename/link, user/group names, NativeCrc32), compiled here with gcc in < 1 s.
NATIVE = Path(os.environ.get("HADOOP_NATIVE_DIR", HERE.parents[2] / "zoo_ray" / "minicluster"))


def build_native() -> None:
    src, lib = NATIVE / "hadoop_native.c", NATIVE / "libhadoop.so"
    if lib.exists() and lib.stat().st_mtime >= src.stat().st_mtime:
        return
    inc = JAVA_HOME / "include"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{inc}", f"-I{inc}/linux", "-o", str(lib),
                    str(src)], check=True)

MAIN = {
    "namenode": "org.apache.hadoop.hdfs.server.namenode.NameNode",
    "datanode": "org.apache.hadoop.hdfs.server.datanode.DataNode",
    "resourcemanager": "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
    "nodemanager": "org.apache.hadoop.yarn.server.nodemanager.NodeManager",
}
HEAP = {"namenode": 256, "datanode": 192, "resourcemanager": 384, "nodemanager": 256}
OPENS = (
    "java.base/java.lang", "java.base/java.lang.reflect", "java.base/java.lang.invoke",
    "java.base/java.io", "java.base/java.net", "java.base/java.nio", "java.base/java.util",
    "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
    "java.base/sun.nio.ch", "java.base/sun.nio.cs", "java.base/sun.security.action",
    "java.base/sun.util.calendar", "java.security.jgss/sun.security.krb5",
)
LOG4J = """\
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


# --------------------------------------------------------------------------- ports
def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


PORT_NAMES = ["nn_rpc", "nn_https", "dn_data", "dn_https", "dn_ipc", "rm_rpc", "rm_scheduler",
              "rm_tracker", "rm_admin", "rm_web", "nm0_rpc", "nm0_localizer", "nm0_web"]


# --------------------------------------------------------------------------- XML
def write_site(path: Path, props: dict[str, str], template: Path | None = None) -> None:
    if template and template.exists():
        root = ET.parse(template).getroot()
    else:
        root = ET.Element("configuration")
    index = {p.findtext("name").strip(): p for p in root.iter("property")}
    for name, value in props.items():
        prop = index.get(name)
        if prop is None:
            prop = ET.SubElement(root, "property")
            ET.SubElement(prop, "name").text = name
            ET.SubElement(prop, "value")
        prop.find("value").text = value
    ET.indent(root)
    path.write_text('<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


# --------------------------------------------------------------------------- TLS
def make_tls(tls: Path) -> dict[str, str]:
    """Self-signed certificate for localhost/127.0.0.1 in a PKCS12 keystore + a truststore.

    keytool takes the passwords from the environment (-storepass:env), never argv.
    Returns the ssl-server.xml / ssl-client.xml properties (the passwords are in those files,
    mode 0600, as on any Hadoop cluster)."""
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    ks, ts, pem = tls / "keystore.p12", tls / "truststore.p12", tls / "ca.pem"
    kp, tp = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    env = {**os.environ, "KP": kp, "TP": tp}
    keytool = str(JAVA_HOME / "bin" / "keytool")
    old = os.umask(0o077)
    try:
        subprocess.run([keytool, "-genkeypair", "-alias", "localhost", "-keyalg", "RSA",
                        "-keysize", "2048", "-validity", "30", "-dname", "CN=localhost",
                        "-ext", "SAN=dns:localhost,ip:127.0.0.1", "-storetype", "PKCS12",
                        "-keystore", str(ks), "-storepass:env", "KP", "-keypass:env", "KP"],
                       env=env, check=True, capture_output=True)
        subprocess.run([keytool, "-exportcert", "-rfc", "-alias", "localhost", "-keystore",
                        str(ks), "-storepass:env", "KP", "-file", str(pem)],
                       env=env, check=True, capture_output=True)
        subprocess.run([keytool, "-importcert", "-noprompt", "-alias", "localhost", "-file",
                        str(pem), "-storetype", "PKCS12", "-keystore", str(ts),
                        "-storepass:env", "TP"], env=env, check=True, capture_output=True)
    finally:
        os.umask(old)
    os.chmod(pem, 0o644)  # the CA cert is public: Python clients verify HTTPS with it
    server = {
        "ssl.server.keystore.type": "pkcs12",
        "ssl.server.keystore.location": str(ks),
        "ssl.server.keystore.password": kp,
        "ssl.server.keystore.keypassword": kp,
        "ssl.server.truststore.type": "pkcs12",
        "ssl.server.truststore.location": str(ts),
        "ssl.server.truststore.password": tp,
    }
    client = {
        "ssl.client.truststore.type": "pkcs12",
        "ssl.client.truststore.location": str(ts),
        "ssl.client.truststore.password": tp,
    }
    return {"server": server, "client": client}


# --------------------------------------------------------------------------- conf
def secure_conf(root: Path, p: dict[str, int], kt: dict[str, Path]) -> dict[str, dict]:
    R = REALM
    core = {
        "fs.defaultFS": f"hdfs://{ADDR}:{p['nn_rpc']}",
        "hadoop.tmp.dir": str(root / "tmp"),
        "hadoop.security.authentication": "kerberos",
        "hadoop.security.authorization": "true",
        "hadoop.rpc.protection": "authentication",
        # Service principals -> the short names real clusters use; users -> their first part.
        "hadoop.security.auth_to_local": "\n".join([
            # [2:$1/$2@$0] formats nn/localhost@R as "nn/localhost@R"; the SecureMode doc's
            # [2:$1@$0](nn/.*@...) never matches (the formatted string is "nn@R").
            f"RULE:[2:$1/$2@$0](nn/.*@{R})s/.*/hdfs/",
            f"RULE:[2:$1/$2@$0](dn/.*@{R})s/.*/hdfs/",
            f"RULE:[2:$1/$2@$0](rm/.*@{R})s/.*/yarn/",
            f"RULE:[2:$1/$2@$0](nm/.*@{R})s/.*/yarn/",
            "DEFAULT"]),
        # SPNEGO on every web UI / REST API (NN, DN, RM, NM) through the generic filter.
        "hadoop.http.filter.initializers":
            "org.apache.hadoop.security.AuthenticationFilterInitializer",
        "hadoop.http.authentication.type": "kerberos",
        "hadoop.http.authentication.simple.anonymous.allowed": "false",
        "hadoop.http.authentication.kerberos.principal": f"HTTP/_HOST@{R}",
        "hadoop.http.authentication.kerberos.keytab": str(kt["http"]),
        "hadoop.http.authentication.signature.secret.file": str(root / "secrets" / "http-secret"),
        # Once libhadoop is loaded, the default JniBasedUnixGroupsMappingWithFallback wants JNI
        # group lookups the shim does not have: use the shell-based mapping (also a common choice).
        "hadoop.security.group.mapping": "org.apache.hadoop.security.ShellBasedUnixGroupsMapping",
        # Tokens name services by IP:port (default true); all on 127.0.0.1 here.
        "hadoop.security.token.service.use_ip": "true",
    }
    hdfs = {
        "dfs.namenode.rpc-address": f"{ADDR}:{p['nn_rpc']}",
        "dfs.namenode.https-address": f"{ADDR}:{p['nn_https']}",
        "dfs.namenode.http-address": f"{ADDR}:0",
        "dfs.namenode.name.dir": (root / "hdfs" / "name").as_uri(),
        "dfs.datanode.data.dir": (root / "hdfs" / "data").as_uri(),
        "dfs.datanode.address": f"{ADDR}:{p['dn_data']}",
        "dfs.datanode.https.address": f"{ADDR}:{p['dn_https']}",
        "dfs.datanode.http.address": f"{ADDR}:0",
        "dfs.datanode.ipc.address": f"{ADDR}:{p['dn_ipc']}",
        "dfs.replication": "1",
        "dfs.client.block.write.replace-datanode-on-failure.enable": "false",
        "dfs.block.access.token.enable": "true",
        "dfs.namenode.kerberos.principal": f"nn/_HOST@{R}",
        "dfs.namenode.keytab.file": str(kt["hdfs"]),
        "dfs.namenode.kerberos.internal.spnego.principal": f"HTTP/_HOST@{R}",
        "dfs.datanode.kerberos.principal": f"dn/_HOST@{R}",
        "dfs.datanode.keytab.file": str(kt["hdfs"]),
        "dfs.web.authentication.kerberos.principal": f"HTTP/_HOST@{R}",
        "dfs.web.authentication.kerberos.keytab": str(kt["http"]),
        # The secure DataNode without root: SASL on the data transfer protocol + HTTPS only.
        "dfs.data.transfer.protection": "authentication",
        "dfs.http.policy": "HTTPS_ONLY",
        "dfs.webhdfs.enabled": "true",
        "dfs.permissions.enabled": "true",
    }
    yarn = {
        "yarn.resourcemanager.hostname": ADDR,
        "yarn.resourcemanager.address": f"{ADDR}:{p['rm_rpc']}",
        "yarn.resourcemanager.scheduler.address": f"{ADDR}:{p['rm_scheduler']}",
        "yarn.resourcemanager.resource-tracker.address": f"{ADDR}:{p['rm_tracker']}",
        "yarn.resourcemanager.admin.address": f"{ADDR}:{p['rm_admin']}",
        "yarn.resourcemanager.webapp.address": f"{ADDR}:{p['rm_web']}",
        "yarn.scheduler.minimum-allocation-mb": "128",
        "yarn.scheduler.maximum-allocation-mb": "8192",
        "yarn.scheduler.maximum-allocation-vcores": "8",
        "yarn.nodemanager.resource.memory-mb": "8192",
        "yarn.nodemanager.resource.cpu-vcores": "8",
        "yarn.nodemanager.resource.detect-hardware-capabilities": "false",
        "yarn.scheduler.include-port-in-node-name": "true",
        "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": "100",
        "yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb": "64",
        "yarn.timeline-service.enabled": "false",
        "yarn.resourcemanager.system-metrics-publisher.enabled": "false",
        "yarn.nodemanager.remote-app-log-dir": "/tmp/logs",
        "yarn.log-aggregation-enable": "true",
        "yarn.node-attribute.fs-store.root-dir": (root / "yarn" / "node-attribute").as_uri(),
        # ---- secure keys
        "yarn.resourcemanager.principal": f"rm/_HOST@{R}",
        "yarn.resourcemanager.keytab": str(kt["yarn"]),
        "yarn.nodemanager.principal": f"nm/_HOST@{R}",
        "yarn.nodemanager.keytab": str(kt["yarn"]),
        "yarn.resourcemanager.webapp.spnego-principal": f"HTTP/_HOST@{R}",
        "yarn.resourcemanager.webapp.spnego-keytab-file": str(kt["http"]),
        "yarn.nodemanager.webapp.spnego-principal": f"HTTP/_HOST@{R}",
        "yarn.nodemanager.webapp.spnego-keytab-file": str(kt["http"]),
        # Default true: the RM's web filter also accepts RM delegation tokens.
        "yarn.resourcemanager.webapp.delegation-token-auth-filter.enabled": "true",
        # Containers run as the NodeManager's OS user (no setuid container-executor).
        "yarn.nodemanager.container-executor.class":
            "org.apache.hadoop.yarn.server.nodemanager.DefaultContainerExecutor",
        "yarn.acl.enable": "true",
        "yarn.admin.acl": "yarn",
        "yarn.http.policy": "HTTP_ONLY",
    }
    nm = {
        "yarn.nodemanager.hostname": ADDR,
        "yarn.nodemanager.address": f"{ADDR}:{p['nm0_rpc']}",
        "yarn.nodemanager.localizer.address": f"{ADDR}:{p['nm0_localizer']}",
        "yarn.nodemanager.webapp.address": f"{ADDR}:{p['nm0_web']}",
        "yarn.nodemanager.local-dirs": str(root / "nm0" / "local"),
        "yarn.nodemanager.log-dirs": str(root / "nm0" / "logs"),
        "yarn.nodemanager.recovery.enabled": "false",
    }
    return {"core": core, "hdfs": hdfs, "yarn": yarn, "nm": nm}


# Queue ACLs default to "*": with yarn.acl.enable=true any authenticated user could still kill
# any application (measured: bob killed root's app). Secure clusters close the root queue
# (ACLs are inherited: child OR parent) and open submission on the leaves; " " means nobody
# (then only the owner and yarn.admin.acl may kill or signal).
QUEUE_ACLS = {
    "yarn.scheduler.capacity.root.acl_submit_applications": " ",
    "yarn.scheduler.capacity.root.acl_administer_queue": " ",
    **{f"yarn.scheduler.capacity.root.{q}.acl_submit_applications": "*"
       for q in ("default", "batch", "tiny")},
    **{f"yarn.scheduler.capacity.root.{q}.acl_administer_queue": " "
       for q in ("default", "batch", "tiny")},
}


def render(root: Path, conf: dict, tls: dict) -> dict[str, Path]:
    dirs = {"client": root / "conf", "nm0": root / "nm0" / "conf"}
    for name, d in dirs.items():
        d.mkdir(parents=True, exist_ok=True)
        yarn = dict(conf["yarn"], **(conf["nm"] if name.startswith("nm") else {}))
        write_site(d / "core-site.xml", conf["core"], TEMPLATES / "core-site.xml")
        write_site(d / "hdfs-site.xml", conf["hdfs"], TEMPLATES / "hdfs-site.xml")
        write_site(d / "yarn-site.xml", yarn, TEMPLATES / "yarn-site.xml")
        write_site(d / "capacity-scheduler.xml", QUEUE_ACLS, TEMPLATES / "capacity-scheduler.xml")
        write_site(d / "ssl-server.xml", tls["server"])
        write_site(d / "ssl-client.xml", tls["client"])
        os.chmod(d / "ssl-server.xml", 0o600)
        (d / "log4j.properties").write_text(LOG4J)
    return dirs


# --------------------------------------------------------------------------- JVMs
def java_argv(conf_dir: Path, main: str, heap: int, krb5: Path, log_dir: Path | None = None,
              name: str = "hadoop", args: list[str] | None = None,
              tmp: Path | None = None) -> list[str]:
    argv = [str(JAVA), f"-Xmx{heap}m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j.configuration=file:{conf_dir / 'log4j.properties'}",
            f"-Dhadoop.root.logger={'INFO,RFA' if log_dir else 'WARN,console'}",
            f"-Dhadoop.home.dir={JARS.parent}",
            # Java does not read KRB5_CONFIG: without this it falls back to /etc/krb5.conf.
            f"-Djava.security.krb5.conf={krb5}"]
    if main == MAIN["nodemanager"]:
        # Only the NodeManager needs (and gets) the native shim.
        argv.append(f"-Djava.library.path={NATIVE}")
    if tmp:
        argv.append(f"-Djava.io.tmpdir={tmp}")
    if log_dir:
        argv += [f"-Dhadoop.log.dir={log_dir}", f"-Dyarn.log.dir={log_dir}",
                 f"-Dhadoop.log.file={name}.log"]
    argv += [f"--add-opens={o}=ALL-UNNAMED" for o in OPENS]
    argv += ["-cp", f"{conf_dir}{os.pathsep}{JARS}/*", main]
    return argv + list(args or [])


class Cluster:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.kdc = MitKdc(self.root / "kdc", realm=REALM)
        self.state_path = self.root / "state.json"

    def state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def save(self, st: dict) -> None:
        self.state_path.write_text(json.dumps(st, indent=1))

    def env(self, ccache: str | None = None, conf: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CLASSPATH", "HADOOP_HOME")}
        env.update(JAVA_HOME=str(JAVA_HOME), HADOOP_CONF_DIR=str(conf or self.root / "conf"),
                   KRB5_CONFIG=str(self.kdc.krb5_conf))
        if ccache:
            env["KRB5CCNAME"] = f"FILE:{ccache}"
        return env

    # ---------------------------------------------------------------- up
    def up(self) -> None:
        t0 = time.monotonic()
        timings = {}
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        (self.root / "secrets").mkdir(mode=0o700, exist_ok=True)
        (self.root / "secrets" / "http-secret").write_text(secrets.token_hex(32))
        os.chmod(self.root / "secrets" / "http-secret", 0o600)
        st = {"pids": {}, "ports": {}}
        # 1. KDC + principals + keytabs
        self.kdc.create()
        st["pids"]["kdc"] = self.kdc.start()
        self.save(st)
        kts = self.kdc.root / "keytabs"
        princ = {s: f"{s}/{FQDN}@{REALM}" for s in ("nn", "dn", "rm", "nm", "HTTP")}
        for s in princ.values():
            self.kdc.kadmin(f"addprinc -randkey {s}")
        kt = {"hdfs": kts / "hdfs.keytab", "yarn": kts / "yarn.keytab", "http": kts / "http.keytab"}
        # ktadd re-randomises keys unless -norandkey: export every key with -norandkey so one
        # principal (HTTP/) can sit in several keytabs without invalidating the earlier ones.
        self.kdc.kadmin(*[f"ktadd -norandkey -k {kt['hdfs']} {princ[s]}" for s in ("nn", "dn", "HTTP")],
                        *[f"ktadd -norandkey -k {kt['yarn']} {princ[s]}" for s in ("rm", "nm", "HTTP")],
                        f"ktadd -norandkey -k {kt['http']} {princ['HTTP']}")
        for k in kt.values():
            os.chmod(k, 0o600)
        password = secrets.token_urlsafe(12)
        self.kdc.add_user(USER, password)
        (self.root / "secrets" / f"{USER}.password").write_text(password)
        os.chmod(self.root / "secrets" / f"{USER}.password", 0o600)
        self.kdc.export_user_keytab(USER, kts / f"{USER}.keytab")
        timings["kdc+principals"] = time.monotonic() - t0
        # 2. TLS, ports, conf
        t = time.monotonic()
        build_native()
        tls = make_tls(self.root / "tls")
        timings["tls"] = time.monotonic() - t
        ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        st["ports"] = ports
        st["keytabs"] = {k: str(v) for k, v in kt.items()}
        self.save(st)
        dirs = render(self.root, secure_conf(self.root, ports, kt), tls)
        # 3. format + daemons
        t = time.monotonic()
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        krb5 = self.kdc.krb5_conf
        fmt = subprocess.run(
            java_argv(dirs["client"], MAIN["namenode"], 256, krb5, logs, "namenode-format",
                      ["-format", "-nonInteractive", "-force", "-clusterId", "zoo-ray-secure"]),
            env=self.env(self.root / "ccache-nn", dirs["client"]), capture_output=True, text=True,
            cwd=self.root)
        if fmt.returncode:
            raise RuntimeError("format failed:\n" + fmt.stderr[-3000:])
        timings["format"] = time.monotonic() - t
        t = time.monotonic()
        for name, kind, conf in (("namenode", "namenode", dirs["client"]),
                                 ("datanode", "datanode", dirs["client"]),
                                 ("resourcemanager", "resourcemanager", dirs["client"]),
                                 ("nodemanager0", "nodemanager", dirs["nm0"])):
            tmp = self.root / "tmp" / "jvm" / name
            tmp.mkdir(parents=True, exist_ok=True)
            argv = java_argv(conf, MAIN[kind], HEAP[kind], krb5, logs, name, tmp=tmp)
            with open(logs / f"{name}.out", "ab") as out:
                # Each daemon logs in from its keytab; give it a private (unused) ccache so it
                # never picks up, or overwrites, the user's ticket.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, cwd=self.root,
                                        env=self.env(self.root / f"ccache-{name}", conf),
                                        start_new_session=True)
            st["pids"][name] = proc.pid
            self.save(st)
        self.wait_ready(st)
        timings["daemons->ready"] = time.monotonic() - t
        t = time.monotonic()
        self.hdfs_setup()
        timings["hdfs dirs"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
        st["timings"] = timings
        self.save(st)
        print(json.dumps(timings, indent=1))

    def alive(self, st: dict) -> None:
        for name, pid in st["pids"].items():
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(")")[1].split()[0] == "Z":
                        raise ProcessLookupError
            except ProcessLookupError:
                log = self.root / "logs" / f"{name}.log"
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise RuntimeError(f"{name} (pid {pid}) died:\n{tail}") from None

    def wait_ready(self, st: dict, timeout: float = 240) -> None:
        """HDFS out of safe mode with a live DataNode, and a RUNNING NodeManager, asked over
        SPNEGO (the NameNode's JMX over HTTPS, the RM's REST API) with the hdfs service ticket."""
        import ssl
        import negotiate
        cc = self.root / "ccache-ready"
        self.kdc._run(["kinit", "-kt", st["keytabs"]["hdfs"], f"nn/{FQDN}@{REALM}"],
                      env=self.kdc.env(KRB5CCNAME=f"FILE:{cc}"))
        os.environ.update(KRB5_CONFIG=str(self.kdc.krb5_conf), KRB5CCNAME=f"FILE:{cc}")
        ctx = ssl.create_default_context(cafile=str(self.root / "tls" / "ca.pem"))
        opener = negotiate.opener(ssl_context=ctx)
        p = st["ports"]
        deadline = time.monotonic() + timeout
        what = "daemons"
        while time.monotonic() < deadline:
            self.alive(st)
            what = "daemons"
            try:
                q = "Hadoop:service=NameNode,name=FSNamesystemState"
                fs = json.loads(opener.open(f"https://{ADDR}:{p['nn_https']}/jmx?qry={q}",
                                            timeout=5).read())["beans"]
                if not fs or fs[0].get("NumLiveDataNodes", 0) < 1:
                    what = "datanode"
                    raise OSError(what)
                q = "Hadoop:service=NameNode,name=NameNodeInfo"
                info = json.loads(opener.open(f"https://{ADDR}:{p['nn_https']}/jmx?qry={q}",
                                              timeout=5).read())["beans"][0]
                if info.get("Safemode"):
                    what = "safemode"
                    raise OSError(what)
                nodes = json.loads(opener.open(
                    f"http://{ADDR}:{p['rm_web']}/ws/v1/cluster/nodes?states=RUNNING",
                    timeout=5).read())["nodes"]
                if not nodes or not nodes.get("node"):
                    what = "nodemanager"
                    raise OSError(what)
                return
            except OSError as e:
                what = f"{what} ({str(e)[:300]})"
                time.sleep(1)
        raise TimeoutError(f"not ready: {what}")

    def hdfs_setup(self) -> None:
        """As the HDFS superuser (nn/ -> 'hdfs'): /tmp 1777, /tmp/logs 1777, /user/<user>."""
        st = self.state()
        cc = self.root / "ccache-ready"
        shell = lambda *a: self.fs(cc, *a)  # noqa: E731
        shell("-mkdir", "-p", "/tmp/logs", f"/user/{USER}")
        shell("-chmod", "1777", "/tmp", "/tmp/logs")
        shell("-chown", f"{USER}", f"/user/{USER}")

    def fs(self, ccache: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = java_argv(self.root / "conf", "org.apache.hadoop.fs.FsShell", 256,
                         self.kdc.krb5_conf, args=list(args))
        r = subprocess.run(argv, env=self.env(ccache), capture_output=True, text=True)
        if check and r.returncode:
            raise RuntimeError(f"hdfs dfs {' '.join(args)} failed:\n{r.stderr[-3000:]}")
        return r

    # ---------------------------------------------------------------- down
    def down(self) -> None:
        st = self.state()
        for name, pid in reversed(list(st.get("pids", {}).items())):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                    try:
                        if os.waitpid(pid, os.WNOHANG)[0] == pid:
                            break
                    except ChildProcessError:
                        pass
                    time.sleep(0.2)
                except ProcessLookupError:
                    break
            else:
                os.killpg(pid, signal.SIGKILL)
        st["pids"] = {}
        self.save(st)


def urllib_https(ctx):
    import urllib.request
    return urllib.request.HTTPSHandler(context=ctx)


if __name__ == "__main__":
    cmd, root = sys.argv[1], sys.argv[2]
    c = Cluster(root)
    if cmd == "up":
        try:
            c.up()
        except BaseException:
            c.down()
            raise
    elif cmd == "down":
        c.down()
    elif cmd == "env":
        print(f"export KRB5_CONFIG={c.kdc.krb5_conf}\nexport HADOOP_CONF_DIR={c.root}/conf\n"
              f"export KRB5CCNAME=FILE:{c.root}/ccache-{USER}\n"
              f"kinit {USER}   # password in {c.root}/secrets/{USER}.password\n"
              f"kinit -kt {c.kdc.root}/keytabs/{USER}.keytab {USER}@{REALM}")
