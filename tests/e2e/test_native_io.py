"""zoo_ray's libhadoop.so (zoo_ray/minicluster/hadoop_native.c), checked through Hadoop's own
classes in a JVM of the test's, and in the NodeManagers of the session's local Hadoop."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil

from zoo_ray.host import find_java_home
from zoo_ray.minicluster.artifacts import HADOOP_VERSION, hadoop_jars
from zoo_ray.minicluster.native_io import LIBRARY_NAME, native_library_dir

_CHECK = Path(__file__).with_name("NativeCheck.java")
_CHUNK = 512
_CORRUPT_BYTE = 70_001  # NativeCheck flips a bit of this byte


def _check(library_dir: Path | None) -> list[str]:
    java_home = find_java_home()
    argv = [str(java_home / "bin" / "java")]
    if library_dir:
        argv.append(f"-Djava.library.path={library_dir}")
    argv += ["-cp", f"{hadoop_jars(HADOOP_VERSION)}/*", str(_CHECK)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith("native "), result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Exception")]
    return lines + errors


def test_the_library_loads_and_its_checksums_chmod_and_stat_agree_with_java():
    library_dir = native_library_dir(find_java_home())
    assert library_dir is not None and (library_dir / LIBRARY_NAME).is_file()
    corrupt_chunk = _CORRUPT_BYTE // _CHUNK * _CHUNK
    assert _check(library_dir) == [
        "native true true",
        # Every chunk's sum from the library equals java.util.zip's, and a flipped bit is
        # found in its own chunk: HDFS reads in the NodeManagers verify with these.
        "CRC32 chunks 196 wrong 0", f"CRC32 corruption at {corrupt_chunk}",
        "CRC32C chunks 196 wrong 0", f"CRC32C corruption at {corrupt_chunk}",
        "chmod rw-r-----",
        f"owner {psutil.Process().username()}",
        f"O_CREAT {os.O_CREAT} regular true",
        "exclusive open EEXIST",
    ]
    # Without it Hadoop has no native I/O, which is what made localization slow.
    without = _check(None)
    assert without[0] == "native false false"
    assert "UnsatisfiedLinkError" in without[-1] and "chmodImpl" in without[-1]


def test_the_nodemanagers_run_with_the_library(cluster):
    library_dir = native_library_dir(find_java_home())
    nodemanagers = [d for name, d in cluster.status()["daemons"].items()
                    if name.startswith("nodemanager")]
    assert len(nodemanagers) == cluster.spec.nodemanagers
    for daemon in nodemanagers:
        assert f"-Djava.library.path={library_dir}" in psutil.Process(daemon["pid"]).cmdline()
        # Loaded as the NodeManager starts, not when it first localizes.
        maps = Path(f"/proc/{daemon['pid']}/maps").read_text()
        assert str(library_dir / LIBRARY_NAME) in maps
