"""Python environments for the executors: find, describe, pack once, upload once.

An environment is a conda env (packed with conda-pack), a virtualenv/venv
(venv-pack), or a prebuilt archive used as is. Packed archives are
content-addressed by a fingerprint of what is installed (package list, Python
version, platform), kept in a local cache, and uploaded once to a cache directory
on the cluster's file system next to a JSON sidecar; an unchanged environment is
never packed or uploaded twice, and installing or removing a package changes the
address. Spark's own jars get the same treatment as ``spark.yarn.archive``.
Runs on the gateway.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import build_once, cache_root, digest
from .errors import (
    CondaEnvNotFoundError,
    InvalidArgumentError,
    NoPythonEnvError,
    NotAPythonEnvError,
)
from .filesystem import ClusterFileSystem
from .progress import interactive

__all__ = [
    "ENV_ALIAS", "ENV_EXCLUDES", "PythonEnv", "find_env", "pyspark_libs", "remote_cache_root",
    "ship_archive", "ship_pyspark_libs", "ship_spark_jars", "ship_zoo_ray", "upload_once",
    "editable_packages", "warn_editable",
]

logger = logging.getLogger(__name__)

#: The directory each container unpacks the environment archive into.
ENV_ALIAS = "zoo_env"

# Executors get PySpark from the pyspark.zip Spark ships; its 450 MB of jars in the
# environment would be packed and uploaded for nothing.
ENV_EXCLUDES = ("lib/python*/site-packages/pyspark/jars/*",)
_COMPRESS_LEVEL = 1  # packing speed matters more than the last few % of size

_DESCRIBE = r"""
import json, os, sys, sysconfig
from importlib import metadata
packages = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                   if d.metadata['Name']})
conda_meta = os.path.join(sys.prefix, "conda-meta")
conda = sorted(f for f in os.listdir(conda_meta) if f.endswith(".json")) if os.path.isdir(
    conda_meta) else []
print(json.dumps({"python": sys.version.split()[0], "platform": sysconfig.get_platform(),
                  "packages": packages, "conda_packages": conda}))
"""


@dataclass(frozen=True)
class PythonEnv:
    """An environment to ship: ``kind`` is "conda", "venv" or "archive".

    ``location`` is the environment's prefix, or for "archive" a local path or a
    URI on the cluster's file system (``hdfs://...``).
    """

    kind: str
    location: str

    @property
    def python(self) -> Path:
        return Path(self.location) / "bin" / "python"

    def describe(self) -> dict[str, Any]:
        """What is installed: Python version, platform, packages (runs the env's Python)."""
        result = subprocess.run(
            [str(self.python), "-c", _DESCRIBE], capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=120,
        )
        if result.returncode != 0:
            raise NotAPythonEnvError(
                f"{self.python} could not describe its environment (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}. Repair the environment, or pass a prebuilt "
                "archive as penv_archive=."
            )
        return json.loads(result.stdout)

    def fingerprint(self, description: dict[str, Any]) -> str:
        """The content address of this env's packed archive."""
        packer = "conda-pack" if self.kind == "conda" else "venv-pack"
        key = {"kind": self.kind, "packer": packer, "excludes": ENV_EXCLUDES,
               "compress_level": _COMPRESS_LEVEL, **description}
        return digest(json.dumps(key, sort_keys=True))


def _conda_candidates(name: str) -> list[Path]:
    """Where a conda env called ``name`` may be, in the order conda itself looks.

    ``conda env list`` if conda is on the PATH, then the envs directories conda is
    told of (``CONDA_ENVS_PATH``/``CONDA_ENVS_DIRS``), the environments registry
    conda keeps (``~/.conda/environments.txt``), the active env (``CONDA_PREFIX``)
    and the usual installation roots.
    """
    found: list[Path] = []
    conda = os.environ.get("CONDA_EXE") or shutil.which("conda")
    if conda:
        try:
            out = subprocess.run([conda, "env", "list", "--json"], capture_output=True,
                                 text=True, timeout=60, stdin=subprocess.DEVNULL)
            found += [Path(p) for p in json.loads(out.stdout).get("envs", [])]
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    for variable in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        found += [Path(d).expanduser() / name
                  for d in os.environ.get(variable, "").split(os.pathsep) if d]
    try:
        registry = (Path.home() / ".conda" / "environments.txt").read_text().splitlines()
    except OSError:
        registry = []
    found += [Path(line.strip()) for line in registry if line.strip()]
    roots = [Path.home() / ".conda", Path.home() / "miniconda3", Path.home() / "anaconda3",
             Path.home() / "miniforge3", Path("/opt/conda")]
    prefix = os.environ.get("CONDA_PREFIX")
    if prefix:
        found.append(Path(prefix))
        roots += [Path(prefix), Path(prefix).parent.parent]
    found += [root / "envs" / name for root in roots]
    return [p for p in found if p.name == name or (name == "base" and (p / "envs").is_dir())]


def _is_conda_prefix(path: Path) -> bool:
    return (path / "conda-meta").is_dir() and (path / "bin" / "python").exists()


def _is_venv_prefix(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() and (path / "bin" / "python").exists()


def _check_archive(path: Path) -> None:
    """Refuse a local archive that holds no ``bin/python`` at its top."""
    wanted = {"bin/python", "bin/python3", "./bin/python", "./bin/python3"}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        else:
            with tarfile.open(path) as archive:
                names = set(archive.getnames())
    except (tarfile.TarError, OSError) as exc:
        raise NotAPythonEnvError(
            f"penv_archive={str(path)!r} is not a readable tar or zip archive ({exc}). Create one "
            "with `conda pack` or `venv-pack`."
        ) from None
    if not names & wanted:
        raise NotAPythonEnvError(
            f"penv_archive={str(path)!r} holds no bin/python at its top level, so it is not a "
            "packed Python environment. Create it with `conda pack -n <env>` or "
            "`venv-pack -p <venv>`."
        )


def find_env(
    conda_name: str | None = None,
    env_prefix: str | None = None,
    penv_archive: str | None = None,
) -> PythonEnv:
    """The environment to ship, from the arguments or else the running interpreter.

    Parameters
    ----------
    conda_name : str, optional
        Name of a conda env (or its prefix, if it contains a "/").
    env_prefix : str, optional
        Prefix of a conda env or a virtualenv/venv.
    penv_archive : str, optional
        A prebuilt archive (``conda pack``/``venv-pack`` output): a local path or a
        URI on the cluster's file system. Used as is.

    Raises
    ------
    InvalidArgumentError
        More than one of the three was given.
    CondaEnvNotFoundError, NotAPythonEnvError, NoPythonEnvError
    """
    given = [a for a in (conda_name, env_prefix, penv_archive) if a]
    if len(given) > 1:
        raise InvalidArgumentError(
            "Pass only one of conda_name=, env_prefix= and penv_archive=; they all name the "
            "environment executors run."
        )
    if penv_archive:
        return _archive_env(penv_archive)
    if conda_name:
        return _conda_env(conda_name)
    return _prefix_env(env_prefix)


def _archive_env(penv_archive: str) -> PythonEnv:
    if "://" in penv_archive and not penv_archive.startswith("file://"):
        return PythonEnv("archive", penv_archive)
    path = Path(penv_archive.replace("file://", "", 1)).expanduser()
    if not path.is_file():
        raise NotAPythonEnvError(
            f"penv_archive={penv_archive!r} does not exist. Pass the path of a "
            "`conda pack`/`venv-pack` archive, or an hdfs:// URI of one."
        )
    _check_archive(path)
    return PythonEnv("archive", str(path.resolve()))


def _conda_env(conda_name: str) -> PythonEnv:
    candidates = [Path(conda_name).expanduser()] if "/" in conda_name else _conda_candidates(
        conda_name)
    for candidate in candidates:
        if _is_conda_prefix(candidate):
            return PythonEnv("conda", str(candidate.resolve()))
    raise CondaEnvNotFoundError(
        f"No conda environment named {conda_name!r} (looked in: "
        f"{', '.join(str(c) for c in candidates) or 'no conda installation found'}). "
        "List yours with `conda env list`, create it with `conda create -n "
        f"{conda_name} python=3.11`, or pass env_prefix=/path/to/env."
    )


def _prefix_env(env_prefix: str | None) -> PythonEnv:
    """``env_prefix``, or the running interpreter's environment."""
    prefix = Path(env_prefix).expanduser() if env_prefix else Path(sys.prefix)
    if _is_conda_prefix(prefix):
        return PythonEnv("conda", str(prefix.resolve()))
    if _is_venv_prefix(prefix):
        return PythonEnv("venv", str(prefix.absolute()))
    what = f"env_prefix={env_prefix!r}" if env_prefix else f"The running Python ({sys.prefix})"
    raise NoPythonEnvError(
        f"{what} is neither a conda environment nor a virtualenv/venv, so zoo_ray cannot pack "
        "it for the executors. Run from a conda env or venv (`python -m venv env && . "
        "env/bin/activate && pip install zoo_ray`), or pass conda_name=, env_prefix= or "
        "penv_archive=."
    )


def editable_packages(prefix: Path) -> dict[str, str]:
    """``{name: source}`` of the packages pip installed in editable mode in ``prefix``.

    The same test conda-pack makes: a ``direct_url.json`` that says ``editable``.
    """
    found: dict[str, str] = {}
    for record in sorted(prefix.glob("lib/python*/site-packages/*.dist-info/direct_url.json")):
        try:
            direct_url = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        dir_info = direct_url.get("dir_info") if isinstance(direct_url, dict) else None
        if isinstance(dir_info, dict) and dir_info.get("editable") is True:
            found[record.parent.name.split("-")[0]] = str(direct_url.get("url", "?"))
    return found


def warn_editable(prefix: Path, editable: dict[str, str]) -> None:
    """One warning naming the editable packages whose code the archive lacks."""
    names = ", ".join(f"{name} ({source})" for name, source in sorted(editable.items()))
    others = sorted(n for n in editable if n.lower().replace("-", "_") != "zoo_ray")
    message = (f"Packing {prefix} without the code of its editable packages (pip install -e), "
               f"which lives outside the environment: {names}.")
    if len(others) < len(editable):
        message += (" Executors import zoo_ray from the zip of the driver's zoo_ray that "
                    "every application ships (spark.yarn.dist.pyFiles), not from the "
                    "environment.")
    if others:
        message += (f" {', '.join(others)} will be missing on the executors unless installed "
                    "normally (pip install without -e) or passed in extra_python_lib=.")
    logger.warning(message)


def _pack(env: PythonEnv, output: Path) -> None:
    filters = [("exclude", pattern) for pattern in ENV_EXCLUDES]
    if env.kind == "conda":
        import conda_pack

        # conda-pack refuses editable packages unless told to leave their code out.
        editable = editable_packages(Path(env.location))
        if editable:
            warn_editable(Path(env.location), editable)
        conda_pack.pack(prefix=env.location, output=str(output), compress_level=_COMPRESS_LEVEL,
                        n_threads=-1, filters=filters, force=True, verbose=interactive(),
                        ignore_editable_packages=True)
    else:
        import venv_pack

        venv_pack.pack(prefix=env.location, output=str(output), compress_level=_COMPRESS_LEVEL,
                       filters=filters, force=True, verbose=interactive())


def packed_env(env: PythonEnv) -> tuple[Path, dict[str, Any]]:
    """The local archive of a conda env or venv and its metadata sidecar.

    Packs only if no archive with the environment's content address exists yet.
    """
    description = env.describe()
    sidecar = {"kind": env.kind, "prefix": env.location, **description}
    address = f"{env.kind}-{env.fingerprint(description)}"
    cache = cache_root() / "envs"
    archive = cache / f"{address}.tar.gz"

    def pack(staging: Path) -> None:
        logger.info("Packing %s environment %s -> %s", env.kind, env.location, archive)
        _pack(env, staging)
        (cache / f"{address}.json").write_text(json.dumps(sidecar, indent=1))

    if not build_once(archive, pack):
        logger.info("Reusing packed %s environment %s (%s)", env.kind, env.location, archive)
    return archive, sidecar


def upload_once(fs: ClusterFileSystem, local: Path, remote: str, sidecar: dict[str, Any]) -> str:
    """Upload ``local`` to ``remote`` with its sidecar unless an equal copy is there."""
    size = local.stat().st_size
    status = fs.status(remote)
    meta = fs.read_text(f"{remote}.json") if status else None
    if status and status["size"] == size and meta is not None:
        logger.info("Reusing %s on the cluster (%d bytes, uploaded before)", remote, size)
        return remote
    logger.info("Uploading %s (%d bytes) to %s", local, size, remote)
    fs.upload(local, remote, label=f"upload {local.name}")
    fs.write_text(f"{remote}.json", json.dumps({**sidecar, "size": size}, indent=1))
    return remote


def remote_cache_root(default_fs: str, user: str, cache_dir: str | None = None) -> str:
    """The cache directory on the cluster: ``cache_dir``, else ``<fs>/user/<user>/.zoo_ray/cache``.

    Known without a JVM, so the PySpark archives' address can be put in the
    environment before Spark's JVM starts.
    """
    return (cache_dir or f"{default_fs.rstrip('/')}/user/{user}/.zoo_ray/cache").rstrip("/")


def pyspark_libs(spark_home: Path, remote_root: str) -> list[tuple[Path, str]]:
    """``(local, remote)`` of pyspark.zip and py4j, content-addressed on the cluster.

    Spark uploads these ~4 MB with every application unless ``PYSPARK_ARCHIVES_PATH``
    names copies already on the cluster.
    """
    lib = spark_home / "python" / "lib"
    pairs = []
    for local in sorted(lib.glob("pyspark.zip")) + sorted(lib.glob("py4j-*.zip")):
        pairs.append((local, f"{remote_root}/pyspark/{digest(local.read_bytes())}/{local.name}"))
    return pairs


def ship_pyspark_libs(fs: ClusterFileSystem, libs: list[tuple[Path, str]]) -> None:
    """Upload pyspark.zip and py4j once per PySpark version."""
    for local, remote in libs:
        upload_once(fs, local, remote, {"kind": "pyspark-lib", "source": str(local)})


def ship_archive(env: PythonEnv, fs: ClusterFileSystem, remote_root: str) -> tuple[str, int]:
    """The URI of ``env`` as one archive on the cluster, packing and uploading only if
    needed, and its size (0 for a prebuilt archive only on the cluster)."""
    if env.kind != "archive":
        archive, sidecar = packed_env(env)
        name = archive.name
    elif "://" in env.location:
        return env.location, 0
    else:
        # A prebuilt archive is addressed by its identity: path, size and mtime.
        archive = Path(env.location)
        stat = archive.stat()
        ident = digest(f"{archive}:{stat.st_size}:{stat.st_mtime_ns}")
        name = f"archive-{ident}-{archive.name}"
        sidecar = {"kind": "archive", "source": str(archive)}
    return (upload_once(fs, archive, f"{remote_root}/envs/{name}", sidecar),
            archive.stat().st_size)


def _spark_jars_archive(spark_home: Path) -> Path:
    """A stored (uncompressed: jars already are) zip of Spark's jars, built once per install."""
    jars = sorted((spark_home / "jars").glob("*.jar"))
    ident = digest(json.dumps([(j.name, j.stat().st_size) for j in jars]))
    archive = cache_root() / "spark" / f"spark-jars-{ident}.zip"

    def build(staging: Path) -> None:
        logger.info("Building Spark's jar archive %s (once per Spark installation)", archive)
        with zipfile.ZipFile(staging, "w", compression=zipfile.ZIP_STORED) as zf:
            for jar in jars:
                zf.write(jar, jar.name)

    build_once(archive, build)
    return archive


def ship_spark_jars(spark_home: Path, fs: ClusterFileSystem, remote_root: str) -> str:
    """URI of a ``spark.yarn.archive`` for ``spark_home``, uploaded once per Spark install."""
    archive = _spark_jars_archive(spark_home)
    remote = f"{remote_root}/spark/{archive.name}"
    return upload_once(fs, archive, remote, {"kind": "spark-jars", "spark_home": str(spark_home)})


def ship_zoo_ray(fs: ClusterFileSystem, remote_root: str) -> str:
    """URI of :func:`_zoo_ray_pyfile` on the cluster, uploaded once per zoo_ray version."""
    local = _zoo_ray_pyfile()
    return upload_once(fs, local, f"{remote_root}/pylib/{local.name}", {"kind": "zoo_ray-lib"})


def _zoo_ray_pyfile() -> Path:
    """A zip of this zoo_ray package, so executors run the driver's very version of it.

    Executors need zoo_ray for the RayManager and the PySpark daemon, even when the
    shipped environment lacks it or holds another version.
    """
    package = Path(__file__).resolve().parent
    sources = sorted(package.rglob("*.py"))
    parts = [p for src in sources for p in (str(src.relative_to(package)), src.read_bytes())]
    archive = cache_root() / "pylib" / f"zoo_ray-{digest(*parts)}.zip"

    def build(staging: Path) -> None:
        with zipfile.ZipFile(staging, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for source in sources:
                zf.write(source, Path("zoo_ray") / source.relative_to(package))

    build_once(archive, build)
    return archive
