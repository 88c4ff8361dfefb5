"""Hadoop's native I/O library for the local Hadoop's NodeManagers, built from our own source.

Maven's Hadoop jars carry no ``libhadoop.so``. Without one, a NodeManager sets the mode of
every file it localizes by running ``chmod`` in a subprocess: a shipped Python environment
of some 35,000 files took minutes on each NodeManager of this project's CI machine, where
real clusters, which install Hadoop's native library, take seconds. ``hadoop_native.c``
implements the JNI calls a NodeManager makes; gcc builds it once per source and JDK into
zoo_ray's cache. Runs on the machine that starts the local Hadoop.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from ..cache import build_once, cache_root, digest

__all__ = ["LIBRARY_NAME", "native_library_dir"]

logger = logging.getLogger(__name__)

#: The file name ``NativeCodeLoader`` looks for on ``java.library.path``.
LIBRARY_NAME = "libhadoop.so"

_SOURCE = Path(__file__).with_name("hadoop_native.c")


def native_library_dir(java_home: Path) -> Path | None:
    """The directory holding ``libhadoop.so`` built for ``java_home``'s JNI headers.

    Built on first use (under a second with gcc) and reused after. Returns ``None``,
    with a warning naming what is missing, when it cannot be built: the local Hadoop
    then works as before, only its NodeManagers localize archives more slowly.

    Parameters
    ----------
    java_home : Path
        The JDK the NodeManagers run on; its ``include`` directory has ``jni.h``.
    """
    compiler = shutil.which("gcc") or shutil.which("cc")
    include = java_home / "include"
    if not compiler or not (include / "jni.h").exists():
        logger.warning(
            "Not building Hadoop's native library for the NodeManagers (%s); they will set "
            "file modes one chmod process at a time, which makes localizing a large Python "
            "environment take minutes. Install gcc and a JDK with its headers to avoid it.",
            "no gcc or cc on PATH" if not compiler else f"no {include / 'jni.h'}")
        return None
    try:
        source = _SOURCE.read_bytes()
    except OSError as exc:
        logger.warning("No source for Hadoop's native library (%s); reinstall zoo_ray. The "
                       "NodeManagers run without it and localize archives more slowly.", exc)
        return None
    target = cache_root() / "native" / digest(source, str(java_home.resolve()))

    def build(staging: Path) -> None:
        staging.mkdir()
        argv = [compiler, "-O2", "-shared", "-fPIC", f"-I{include}", f"-I{include / 'linux'}",
                "-o", str(staging / LIBRARY_NAME), str(_SOURCE)]
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)

    try:
        if build_once(target, build):
            logger.info("Built Hadoop's native library for the NodeManagers in %s", target)
    except (subprocess.SubprocessError, OSError) as exc:
        # The compiler's first errors say what is wrong; the rest follow from them.
        first = "\n".join((getattr(exc, "stderr", None) or "").splitlines()[:20])
        logger.warning("Building Hadoop's native library with %s failed; the NodeManagers run "
                       "without it and localize archives more slowly:\n%s", compiler, first)
        return None
    return target
