"""One Hadoop daemon: a JVM started by main class, in its own process group.

A :class:`Daemon` is described by plain data (so ``zoo-ray minicluster down`` in
another process can stop what ``up`` started) and identified by PID *and* process
start time, so a recycled PID is never mistaken for ours. Runs on the machine that
starts the local Hadoop.
"""
from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from ..host import tail, terminate

__all__ = ["Daemon", "MAIN_CLASSES", "daemon_env", "java_argv"]

logger = logging.getLogger(__name__)

MAIN_CLASSES = {
    "namenode": "org.apache.hadoop.hdfs.server.namenode.NameNode",
    "datanode": "org.apache.hadoop.hdfs.server.datanode.DataNode",
    "resourcemanager": "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
    "nodemanager": "org.apache.hadoop.yarn.server.nodemanager.NodeManager",
}

#: The JVM options of every JVM on the local Hadoop (its daemons and command-line tools,
#: and through the NodeManagers' ``admin-env`` every container's: Spark's ApplicationMaster
#: and executors). They live minutes to hours on a small box and spend most of their CPU
#: starting up, where C2's compiling costs more than its faster code gains back: a Spark
#: job's JVM used 44 % less CPU with these (7.9 against 14.1 CPU s, 2-core box), and a
#: serial collector keeps each JVM to a few threads.
SMALL_BOX_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

# Hadoop reaches into JDK internals; Java 17 refuses unless the packages are opened.
_JAVA17_OPENS = (
    "java.base/java.lang", "java.base/java.lang.reflect", "java.base/java.lang.invoke",
    "java.base/java.io", "java.base/java.net", "java.base/java.nio", "java.base/java.util",
    "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
    "java.base/sun.nio.ch", "java.base/sun.nio.cs", "java.base/sun.security.action",
    "java.base/sun.util.calendar", "java.security.jgss/sun.security.krb5",
)


def java_argv(
    java_home: Path,
    conf_dir: Path,
    jars: Path,
    main_class: str,
    heap_mb: int,
    log_dir: Path | None = None,
    log_name: str = "hadoop",
    args: list[str] | None = None,
    tmp_dir: Path | None = None,
    library_dir: Path | None = None,
    options: list[str] | None = None,
) -> list[str]:
    """The argv that runs a Hadoop main class like the ``hadoop``/``yarn`` scripts would.

    Without ``log_dir`` the JVM logs warnings to stderr (for command-line tools).
    ``tmp_dir`` (an existing directory) replaces ``/tmp`` as the JVM's temp dir.
    ``library_dir`` holds the ``libhadoop.so`` the JVM loads; ``options`` are more JVM
    options (a secure cluster's Kerberos profile).
    """
    logger_spec = "INFO,RFA" if log_dir else "WARN,console"
    argv = [
        str(java_home / "bin" / "java"),
        f"-Xmx{heap_mb}m",
        *SMALL_BOX_JVM,
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j.configuration=file:{conf_dir / 'log4j.properties'}",
        f"-Dhadoop.root.logger={logger_spec}",
        f"-Dhadoop.home.dir={jars.parent}",
    ]
    if tmp_dir:
        # Jetty unpacks each web UI there, and leaves it behind when the daemon is killed.
        argv.append(f"-Djava.io.tmpdir={tmp_dir}")
    if library_dir:
        argv.append(f"-Djava.library.path={library_dir}")
    argv += options or []
    if log_dir:
        argv += [
            f"-Dhadoop.log.dir={log_dir}",
            f"-Dyarn.log.dir={log_dir}",
            f"-Dhadoop.log.file={log_name}.log",
        ]
    argv += [f"--add-opens={pkg}=ALL-UNNAMED" for pkg in _JAVA17_OPENS]
    argv += ["-cp", f"{conf_dir}{os.pathsep}{jars}/*", main_class]
    return argv + list(args or [])


def daemon_env(java_home: Path, conf_dir: Path) -> dict[str, str]:
    """The environment a Hadoop JVM runs with: this one, with the cluster's Java and
    configuration, and without a CLASSPATH or HADOOP_HOME of another Hadoop."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLASSPATH", "HADOOP_HOME")}
    env["JAVA_HOME"] = str(java_home)
    env["HADOOP_CONF_DIR"] = str(conf_dir)
    return env


@dataclass
class Daemon:
    """A started daemon: its name, PID, the PID's start time and its log files."""

    name: str
    pid: int
    create_time: float
    log: str
    out: str

    @classmethod
    def start(
        cls, name: str, argv: list[str], log_dir: Path, env: dict[str, str], cwd: Path
    ) -> Daemon:
        """Start ``argv`` in a new session (its own process group), output to ``<name>.out``."""
        log_dir.mkdir(parents=True, exist_ok=True)
        out = log_dir / f"{name}.out"
        with open(out, "ab") as out_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        logger.debug("started %s (pid %d)", name, proc.pid)
        return cls(name, proc.pid, create_time, str(log_dir / f"{name}.log"), str(out))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Daemon:
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def process(self) -> psutil.Process | None:
        """The live process of this daemon, or None if it has exited."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                # Our own child that exited but was not reaped yet.
                try:
                    os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                return None
            return proc
        except psutil.Error:
            return None

    @property
    def alive(self) -> bool:
        return self.process() is not None

    def log_tail(self, lines: int = 30) -> str:
        """The tail of the daemon's log, or of its stdout/stderr when the log is empty."""
        text = tail(Path(self.log), lines)
        out = tail(Path(self.out), lines)
        return "\n".join(part for part in (text, out) if part)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the daemon's process group, SIGKILL it after ``grace`` seconds."""
        proc = self.process()
        if proc is None:
            return
        if terminate([proc], grace, group=True):
            logger.warning("%s (pid %d) ignored SIGTERM for %.0fs; killed it", self.name,
                           self.pid, grace)
