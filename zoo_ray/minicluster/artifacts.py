"""Fetching the Hadoop server jars from Maven Central.

The jars are resolved once with ``mvn dependency:copy-dependencies`` into a
per-user cache directory; every later start of the local Hadoop is offline.
Runs on the machine that starts the local Hadoop.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from ..cache import build_once, cache_root
from ..errors import ArtifactFetchError, MavenNotFoundError

__all__ = ["HADOOP_VERSION", "ARTIFACTS", "hadoop_jars"]

logger = logging.getLogger(__name__)

#: Hadoop 3.5 is the first line whose daemons fully support Java 17.
HADOOP_VERSION = "3.5.0"

#: org.apache.hadoop (artifact, classifier) pairs holding the daemons' main classes and
#: the logs client. HDFS ships its web UI resources (webapps/hdfs, webapps/datanode),
#: which the NameNode and DataNode refuse to start without, only in its tests jar.
ARTIFACTS = (
    ("hadoop-common", ""),
    ("hadoop-hdfs", ""),
    ("hadoop-hdfs", "tests"),
    ("hadoop-hdfs-client", ""),
    ("hadoop-yarn-server-resourcemanager", ""),
    ("hadoop-yarn-server-nodemanager", ""),
    ("hadoop-yarn-client", ""),
    # The ResourceManager web app loads timeline collector classes even with timeline off.
    ("hadoop-yarn-server-timelineservice", ""),
)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>zoo-ray</groupId>
  <artifactId>local-hadoop</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = (
    "    <dependency><groupId>org.apache.hadoop</groupId><artifactId>{artifact}</artifactId>"
    "<version>{version}</version><classifier>{classifier}</classifier></dependency>"
)


def hadoop_jars(version: str = HADOOP_VERSION) -> Path:
    """The directory of Hadoop ``version``'s jars, fetching them on first use.

    Parameters
    ----------
    version : str
        Hadoop version to resolve from Maven Central.

    Returns
    -------
    Path
        A directory of jars, usable as the ``<dir>/*`` classpath entry.

    Raises
    ------
    MavenNotFoundError
        The jars are not cached and ``mvn`` is not on ``PATH``.
    ArtifactFetchError
        Maven ran and failed (with the tail of its output).
    """
    lib = cache_root() / f"hadoop-{version}" / "lib"
    if lib.is_dir():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenNotFoundError(
            f"The Hadoop {version} jars are not cached in {lib.parent} and Maven is not installed "
            "to fetch them. Install Maven (e.g. `apt-get install maven`), or copy a cache "
            f"directory from a machine that has it to {lib.parent}."
        )
    build_once(lib, lambda staging: _fetch(mvn, version, staging))
    return lib


def _fetch(mvn: str, version: str, out_dir: Path) -> None:
    """Let Maven copy Hadoop ``version``'s jars (with their dependencies) into ``out_dir``."""
    pom = out_dir.parent / "pom.xml"
    deps = "\n".join(
        _DEPENDENCY.format(artifact=a, classifier=c, version=version) for a, c in ARTIFACTS
    )
    pom.write_text(_POM.format(version=version, dependencies=deps))
    logger.info("Fetching Hadoop %s jars from Maven Central into %s (once)", version,
                out_dir.parent.parent)
    argv = [
        mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={out_dir}", "-DincludeScope=runtime",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise ArtifactFetchError(
            f"Maven could not fetch the Hadoop {version} jars (exit {result.returncode}). "
            "Check that Maven Central (https://repo.maven.apache.org) is reachable, or set "
            f"a mirror in ~/.m2/settings.xml. Maven said:\n{tail}"
        )
