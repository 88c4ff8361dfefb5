"""A real conda environment for the tests, built offline: tests only, on the gateway.

No conda channel is reachable here, so the environment is made the way conda makes
one, from parts that are:

1. ``rattler-build`` (PyPI: ``py-rattler-build``) builds two conda packages into a
   local channel: ``python``, from the files of the interpreter running the tests
   (``sys.base_prefix``), and ``zoo-ray-env-marker``, a module that exists only in
   this environment and records the prefix it was installed at (a text file with
   a prefix placeholder, which conda relocates);
2. ``rattler`` (PyPI: ``py-rattler``) solves against that channel and installs the
   two into a prefix, writing ``conda-meta/<package>.json`` records; a conda-style
   ``conda-meta/history`` entry is added;
3. the environment's own ``python -m ensurepip`` and ``python -m pip`` install Ray,
   PySpark and the rest at the versions the tests run with, as people do on a
   gateway, and optionally zoo_ray itself in editable mode.

Everything is cached under ``<dest>/<key>/``, the key being a digest of the inputs
(interpreter, recipes, pip requirements, editable path), so a second call with the
same inputs returns at once. ``<dest>/<key>/envs`` holds one environment, so it is
a valid ``CONDA_ENVS_PATH`` entry for ``init_spark_on_yarn(conda_name=...)``.

Run ``python -m tests.conda_env [DEST] --name NAME [--editable PATH]`` to build one
and print its prefix.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from zoo_ray.cache import build_once, cache_root, digest

__all__ = ["MARKER_MODULE", "MARKER_PACKAGE", "build_conda_env", "conda_install",
           "default_root", "envs_dir", "local_channel"]

logger = logging.getLogger(__name__)

#: The module of the conda package that only the test environment holds.
MARKER_MODULE = "zoo_ray_env_marker"
MARKER_PACKAGE = "zoo-ray-env-marker"

#: Installed by the environment's own pip at the versions the tests run with, so the
#: driver and the executors run the very same Ray and PySpark.
_PIP_PACKAGES = ("ray[default]", "pyspark", "pyarrow", "pandas", "numpy", "psutil")

# The interpreter is copied without the test suite and without the packages installed
# into it. Its bytecode is compiled by one process in the script: rattler-build's own
# compilation starts a Python per file (about 100 s for the standard library on 2 cores).
_PYTHON_RECIPE = """\
package:
  name: python
  version: "{version}"
build:
  number: 0
  script:
    - set -eu
    - mkdir -p $PREFIX/bin $PREFIX/lib $PREFIX/include
    - cp -a {source}/bin/python{short} $PREFIX/bin/
    - ln -s python{short} $PREFIX/bin/python3
    - ln -s python{short} $PREFIX/bin/python
    - find {source}/lib -maxdepth 1 -name 'libpython*' -exec cp -a {{}} $PREFIX/lib/ \\;
    - cp -a {source}/include/python{short} $PREFIX/include/
    - >-
      tar -C {source}/lib -cf - --exclude=python{short}/site-packages
      --exclude=python{short}/test --exclude=__pycache__ python{short}
      | tar -C $PREFIX/lib -xf -
    - mkdir -p $PREFIX/lib/python{short}/site-packages
    # sysconfig's data and the Makefile name the install prefix: make them name this
    # one, so the package records them as text files holding the prefix.
    - >-
      grep -rlI {source} $PREFIX | while read -r file; do
      sed -i "s|{source}|$PREFIX|g" "$file"; done
    # (lib2to3's test data holds files that are not Python 3 on purpose.)
    - >-
      $PREFIX/bin/python{short} -m compileall -q -j 0 -x lib2to3/tests/data
      $PREFIX/lib/python{short}
  python:
    skip_pyc_compilation:
      - "**/*.py"
  dynamic_linking:
    rpaths:
      - lib/
about:
  summary: CPython {version}, repackaged from {source} for zoo_ray's tests
"""

_MARKER_RECIPE = """\
package:
  name: {package}
  version: "1.0"
build:
  number: 0
  script:
    - mkdir -p $PREFIX/lib/python{short}/site-packages/{module}
    - >-
      echo "INSTALLED_AT = \\"$PREFIX\\""
      > $PREFIX/lib/python{short}/site-packages/{module}/__init__.py
requirements:
  run:
    - python {short}.*
about:
  summary: A module that only zoo_ray's test conda environment holds
"""


def default_root() -> Path:
    """Where test environments are cached: ``<zoo_ray's cache>/test-conda``."""
    return cache_root() / "test-conda"


def envs_dir(prefix: Path) -> Path:
    """The directory to put in ``CONDA_ENVS_PATH`` so ``conda_name`` finds ``prefix``."""
    return prefix.parent


def _recipes() -> dict[str, str]:
    source = Path(sys.base_prefix).resolve()
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "python": _PYTHON_RECIPE.format(version=platform.python_version(), source=source,
                                        short=short),
        MARKER_PACKAGE: _MARKER_RECIPE.format(package=MARKER_PACKAGE, module=MARKER_MODULE,
                                               short=short),
    }


def _pip_requirements(extra_pip: Sequence[str]) -> list[str]:
    pins = [f"{name}=={metadata.version(name.split('[')[0])}" for name in _PIP_PACKAGES]
    return pins + list(extra_pip)


def _build_channel(channel: Path, recipes: dict[str, str]) -> None:
    """Build the conda packages of ``recipes`` into the local channel ``channel``."""
    from rattler_build import Stage0Recipe, ToolConfiguration

    channel.mkdir()
    work = channel.parent / "recipes"
    for package, text in recipes.items():
        recipe_dir = work / package
        recipe_dir.mkdir(parents=True)
        (recipe_dir / "recipe.yaml").write_text(text)
        logger.info("rattler-build: building %s into %s", package, channel)
        # No build or host requirements: nothing is fetched, the channel given is ours.
        Stage0Recipe.from_file(recipe_dir / "recipe.yaml").run_build(
            tool_config=ToolConfiguration(), output_dir=channel,
            channels=[channel.as_uri()], no_build_id=True, package_format="conda:1")
    shutil.rmtree(channel / "bld", ignore_errors=True)


def _conda_install(channel: Path, prefix: Path, specs: list[str], package_cache: Path) -> None:
    """Solve ``specs`` against ``channel`` and install them into ``prefix``, as conda would."""
    import rattler

    async def solve_and_install() -> list[str]:
        records = await rattler.solve(sources=[channel.as_uri()], specs=specs)
        await rattler.install(records, prefix, cache_dir=package_cache, show_progress=False)
        return [f"{record.channel}::{record.name.normalized}-{record.version}-{record.build}"
                for record in records]

    installed = asyncio.run(solve_and_install())
    # conda appends one entry per transaction; `conda env export --from-history` reads it.
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    entry = [f"==> {stamp} <==", f"# cmd: rattler install {' '.join(specs)}",
             *(f"+{package}" for package in sorted(installed)), f"# update specs: {specs!r}"]
    with open(prefix / "conda-meta" / "history", "a") as history:
        history.write("\n".join(entry) + "\n")


def local_channel(dest: Path | None = None) -> Path:
    """The local conda channel holding ``python`` and the marker package (built once)."""
    root = Path(dest) if dest is not None else default_root()
    recipes = _recipes()
    channel = root / f"channel-{digest(metadata.version('py-rattler-build'), *recipes.values())}"
    if build_once(channel, lambda staging: _build_channel(staging, recipes)):
        logger.info("Built the local conda channel %s", channel)
    return channel


def conda_install(prefix: Path, specs: list[str], dest: Path | None = None) -> None:
    """Make ``prefix`` hold exactly what ``specs`` solve to from :func:`local_channel`,
    as ``conda install``/``conda create`` would (a new prefix is created)."""
    root = Path(dest) if dest is not None else default_root()
    _conda_install(local_channel(root), prefix, specs, root / "pkgs")


def _pip(prefix: Path, *args: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([str(prefix / "bin" / "python"), *args], check=True, env=env,
                   stdin=subprocess.DEVNULL)


def build_conda_env(
    dest: Path | None = None,
    *,
    name: str,
    editable: Path | None = None,
    extra_pip: Sequence[str] = (),
    packages: bool = True,
) -> Path:
    """A conda environment named ``name``, built once per set of inputs.

    Parameters
    ----------
    dest : Path, optional
        Cache directory of test environments; default :func:`default_root`.
    name : str
        The environment's name: its prefix is ``<dest>/<key>/envs/<name>``.
    editable : Path, optional
        A source tree to ``pip install -e`` into the environment (zoo_ray's own, say).
    extra_pip : sequence of str
        More pip requirements to install.
    packages : bool
        Install zoo_ray's requirements (Ray, PySpark, ...; half a minute or more).
        Without them, the editable install is made without its dependencies: an
        environment only to be packed, never run.

    Returns
    -------
    Path
        The environment's prefix.

    Notes
    -----
    A conda prefix cannot be moved once installed (its scripts and records name
    it), so the environment is built in place under
    :func:`zoo_ray.cache.build_once`'s lock, and what is published atomically is
    ``<dest>/<key>/env.json``, written last: an environment without it is a
    leftover of a build that died and is built again.
    """
    root = Path(dest) if dest is not None else default_root()
    recipes = _recipes()
    requirements = _pip_requirements(extra_pip) if packages else list(extra_pip)
    channel = local_channel(root)

    inputs = {"name": name, "recipes": recipes, "pip": requirements,
              "editable": str(editable.resolve()) if editable else None}
    # The steps below are an input too: changing them builds anew.
    entry = root / digest(json.dumps(inputs, sort_keys=True), Path(__file__).read_bytes())
    prefix = entry / "envs" / name

    def build(done: Path) -> None:
        started = time.monotonic()
        shutil.rmtree(entry / "envs", ignore_errors=True)
        prefix.parent.mkdir(parents=True)
        _conda_install(channel, prefix, [f"python=={platform.python_version()}",
                                         MARKER_PACKAGE], root / "pkgs")
        _pip(prefix, "-m", "ensurepip", "--default-pip")
        if requirements:
            _pip(prefix, "-m", "pip", "install", *requirements)
        if editable:
            _pip(prefix, "-m", "pip", "install", *(() if packages else ("--no-deps",)),
                 "-e", str(editable))
        done.write_text(json.dumps({**inputs, "prefix": str(prefix),
                                    "build_seconds": round(time.monotonic() - started)},
                                   indent=1))

    entry.mkdir(parents=True, exist_ok=True)
    if build_once(entry / "env.json", build):
        logger.info("Built the test conda environment %s", prefix)
    return prefix


def main(argv: Sequence[str] | None = None) -> None:
    """Build a test environment and print its prefix."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, default=None,
                        help="cache directory of test environments")
    parser.add_argument("--name", default="zoo-ray-test")
    parser.add_argument("--editable", type=Path, default=None,
                        help="a source tree to pip install -e into the environment")
    parser.add_argument("--pip", action="append", default=[], help="one more requirement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    prefix = build_conda_env(args.dest, name=args.name, editable=args.editable,
                             extra_pip=args.pip)
    sys.stdout.write(f"{prefix}\n")


if __name__ == "__main__":
    main()
