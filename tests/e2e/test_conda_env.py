"""A real conda environment (tests/conda_env.py): its records, conda-pack, relocation.

No cluster: the environment is packed as ``init_spark_on_yarn`` packs it, unpacked
elsewhere as a YARN container unpacks it, and run from there. The first run builds
the environment (about a minute); later runs reuse it from zoo_ray's cache.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import conda_pack
import pytest
from tests.conda_env import (
    MARKER_MODULE,
    MARKER_PACKAGE,
    build_conda_env,
    conda_install,
    envs_dir,
)
from tests.e2e.helpers import localized_archives
from tests.wheels import make_wheel

from zoo_ray.envs import PythonEnv, _pack, find_env
from zoo_ray.shipping import ship_environment

pytestmark = pytest.mark.slow  # builds conda environments (about a minute, the first time)

NAME = "zoo-ray-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefix() -> Path:
    return build_conda_env(name=NAME)


@pytest.fixture(scope="session")
def editable_prefix() -> Path:
    # Only packed, never run: zoo_ray without its dependencies.
    return build_conda_env(name="zoo-ray-editable", editable=REPO, packages=False)


@pytest.fixture(scope="module")
def archive(prefix, tmp_path_factory) -> Path:
    """The environment packed by zoo_ray, as it is shipped to the executors."""
    output = tmp_path_factory.mktemp("packed") / "env.tar.gz"
    _pack(PythonEnv("conda", str(prefix)), output)
    return output


def _unpack(archive: Path, where: Path) -> Path:
    where.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(where)], check=True)
    return where


def _run(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def _records(prefix: Path) -> dict[str, dict]:
    return {record["name"]: record for record in
            (json.loads(p.read_text()) for p in (prefix / "conda-meta").glob("*.json"))}


def test_conda_meta_records_own_the_interpreter(prefix):
    records = _records(prefix)
    assert set(records) == {"python", "zoo-ray-env-marker"}
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert {"bin/python", f"bin/python{short}"} <= set(records["python"]["files"])
    assert records["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert f"lib/python{short}/site-packages/{MARKER_MODULE}/__init__.py" in records[
        "zoo-ray-env-marker"]["files"]
    assert find_env(env_prefix=str(prefix)).kind == "conda"


def test_conda_meta_history_records_the_transaction(prefix):
    history = (prefix / "conda-meta" / "history").read_text()
    assert history.startswith("==> ")
    assert "::python-" in history and "::zoo-ray-env-marker-1.0-" in history


def test_pip_installed_the_rest_at_the_tests_versions(prefix):
    listed = json.loads(subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        check=True, capture_output=True, text=True).stdout)
    installed = {p["name"].lower(): p["version"] for p in listed}
    for name in ("ray", "pyspark", "pyarrow", "pandas", "numpy", "psutil"):
        assert installed[name] == metadata.version(name)
    assert "conda-pack" not in installed
    # pip's packages are no conda package's: conda-pack ships them as unmanaged files.
    assert not {"ray", "pyspark"} & set(_records(prefix))


@pytest.mark.parametrize("variable", ["CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"])
def test_found_by_name_through_the_envs_path(prefix, monkeypatch, variable):
    monkeypatch.setenv(variable, f"/nonexistent:{envs_dir(prefix)}")
    assert find_env(conda_name=NAME).location == str(prefix.resolve())


def test_found_by_name_through_the_environments_registry(prefix, monkeypatch, tmp_path):
    (tmp_path / ".conda").mkdir()
    (tmp_path / ".conda" / "environments.txt").write_text(f"/opt/other/env\n{prefix}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_env(conda_name=NAME).location == str(prefix.resolve())


def test_found_by_name_when_active(prefix, monkeypatch):
    monkeypatch.setenv("CONDA_PREFIX", str(prefix))
    assert find_env(conda_name=NAME).location == str(prefix.resolve())


def test_a_second_build_is_the_cached_one(prefix):
    assert build_conda_env(name=NAME) == prefix


def test_unpacked_elsewhere_python_and_its_packages_run(archive, prefix, tmp_path):
    where = _unpack(archive, tmp_path / "container" / "zoo_env")
    out = _run(where / "bin" / "python", (
        "import sys, ray, pyspark, zoo_ray_env_marker; "
        "print(sys.prefix, ray.__version__, pyspark.__version__)"))
    assert out.split() == [str(where), metadata.version("ray"), metadata.version("pyspark")]
    # Executors start Ray as zoo_ray's RayManager does: `python -m ray.scripts.scripts`.
    version = subprocess.run([str(where / "bin" / "python"), "-m", "ray.scripts.scripts",
                              "--version"], check=True, capture_output=True, text=True)
    assert metadata.version("ray") in version.stdout
    # PySpark's 450 MB of jars stay behind: executors get PySpark from pyspark.zip.
    assert not any(where.glob("lib/python*/site-packages/pyspark/jars/*.jar"))


def _files_holding(root: Path, text: str) -> set[str]:
    """Files under ``root`` holding ``text``, bytecode caches aside."""
    needle = text.encode()
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts
            and needle in p.read_bytes()}


def test_relocation_of_shebangs_and_text_files(archive, prefix, tmp_path):
    """What conda-pack relocates, and what conda-unpack does on top.

    Packing rewrites the shebangs of pip's scripts to ``/usr/bin/env python``, so
    they run any ``python`` on the PATH; the text files of conda packages that hold
    the prefix (sysconfig's data, the marker module) are packed from the package
    cache and hold the package's placeholder until ``conda-unpack`` writes the new
    prefix in. Neither matters for running Python and Ray, which need no
    conda-unpack: zoo_ray's executors never run it.
    """
    # Files that conda's records say hold the prefix, and the placeholder each holds.
    placeholders = {entry["_path"]: entry["prefix_placeholder"]
                    for record in _records(prefix).values()
                    for entry in record["paths_data"]["paths"]
                    if entry.get("prefix_placeholder") and entry.get("file_mode") == "text"}
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"lib/python{short}/site-packages/{MARKER_MODULE}/__init__.py" in placeholders
    assert any(p.startswith(f"lib/python{short}/_sysconfigdata_") for p in placeholders)
    # Installed, they hold the prefix they were installed at.
    assert all(str(prefix) in (prefix / path).read_text() for path in placeholders)

    where = _unpack(archive, tmp_path / "zoo_env")
    python = where / "bin" / "python"
    for script in ("ray", "pip"):
        assert (where / "bin" / script).read_text().splitlines()[0] == "#!/usr/bin/env python"
    # Only conda-unpack's own table of prefixes to replace names the old prefix.
    assert _files_holding(where, str(prefix)) == {"bin/conda-unpack"}
    for path, placeholder in placeholders.items():
        assert placeholder in (where / path).read_text()
    installed_at = _run(python, f"import {MARKER_MODULE} as m; print(m.INSTALLED_AT)")
    assert installed_at not in (str(prefix), str(where))

    subprocess.run([str(where / "bin" / "conda-unpack")], check=True)
    for path, placeholder in placeholders.items():
        text = (where / path).read_text()
        assert placeholder not in text and str(where) in text
    assert _run(python, f"import {MARKER_MODULE} as m; print(m.INSTALLED_AT)") == str(where)
    assert _run(python, "import sysconfig; print(sysconfig.get_config_var('prefix'))") == str(
        where)
    assert (where / "bin" / "ray").read_text().startswith("#!/usr/bin/env python\n")


def test_conda_pack_refuses_an_editable_install_by_default(editable_prefix, tmp_path):
    with pytest.raises(conda_pack.CondaPackException, match=r"editable packages(.|\n)*- zoo_ray"):
        conda_pack.pack(prefix=str(editable_prefix), output=str(tmp_path / "env.tar.gz"))


def test_zoo_ray_packs_an_editable_install_with_one_warning(editable_prefix, tmp_path, caplog):
    output = tmp_path / "env.tar.gz"
    with caplog.at_level(logging.WARNING, logger="zoo_ray.envs"):
        _pack(PythonEnv("conda", str(editable_prefix)), output)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"zoo_ray ({REPO.as_uri()})" in warnings[0]
    assert "spark.yarn.dist.pyFiles" in warnings[0] and "missing" not in warnings[0]
    assert output.stat().st_size > 0


# ------------------------------------------------------------ on YARN (the local Hadoop)
SPARK_ARGS = dict(num_executors=2, executor_cores=1, executor_memory="512m",
                  driver_memory="512m", extra_executor_memory_for_ray="1g")


def _where_executors_run(sc):
    def probe(_):
        import importlib
        import sys as executor_sys

        marker = importlib.import_module("zoo_ray_env_marker")
        return [(executor_sys.executable, executor_sys.prefix, marker.__name__)]
    return sc.parallelize(range(2), 2).mapPartitions(probe).collect()


def _logged(caplog, prefix):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_init_spark_on_yarn_ships_the_conda_env_by_name_and_ray_runs_on_it(
        cluster, prefix, monkeypatch, caplog, no_shared_spark):
    import ray

    from zoo_ray import RayContext, init_spark_on_yarn

    caplog.set_level(logging.INFO, logger="zoo_ray")
    monkeypatch.setenv("CONDA_ENVS_PATH", str(envs_dir(prefix)))
    # By prefix it is the same environment (the YARN run below goes by name).
    assert find_env(conda_name=str(prefix)) == find_env(conda_name=NAME)
    started = time.monotonic()
    sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), conda_name=NAME,
                            **SPARK_ARGS)
    took = time.monotonic() - started
    try:
        for executable, where, marker in _where_executors_run(sc):
            # The shipped interpreter, from the unpacked archive in the container.
            assert where.endswith("/zoo_env") and executable.startswith(where)
            assert marker == MARKER_MODULE
        ctx = RayContext(sc, object_store_memory="128m")
        ctx.init()
        try:
            @ray.remote(num_cpus=1)
            def in_the_env():
                import sys as node_sys

                import zoo_ray_env_marker  # noqa: F401 - only the conda env has it
                return node_sys.prefix
            assert all(p.endswith("/zoo_env")
                       for p in ray.get([in_the_env.remote() for _ in range(4)]))
        finally:
            ctx.stop()
    finally:
        sc.stop()
    packed = len(_logged(caplog, "Packing the"))  # 0 if an earlier run left them cached
    # Packing and uploading happen at most once; the next start reuses both.
    caplog.clear()
    shipped = ship_environment(str(cluster.hadoop_conf_dir), conda_name=NAME)
    assert shipped["layered"] and shipped["parts"][0]["link"] == "zoo_env"
    assert _logged(caplog, "Packing") == [] and _logged(caplog, "Uploading") == []
    reused = [m for m in _logged(caplog, "Reusing hdfs://") if "/layers/" in m]
    assert len(reused) == len(shipped["parts"])
    # Every layer was localized by the NodeManagers the executors ran on, as is.
    localized = {name for _, name in localized_archives(cluster)}
    missing = {Path(p["remote"]).name for p in shipped["parts"]} - localized
    assert not missing, f"layers no NodeManager localized: {missing}"
    print(f"\nconda env in {len(shipped['parts'])} layers ({packed} packed now): "
          f"{shipped['bytes'] / 2**20:.0f} MiB; init_spark_on_yarn {took:.1f}s")


def test_installing_a_package_into_the_conda_env_changes_its_address(prefix, tmp_path):
    env = find_env(env_prefix=str(prefix))
    before = env.fingerprint(env.describe())
    python = str(prefix / "bin" / "python")
    wheel = make_wheel(tmp_path, "zoo_probe_conda", "pip-installed")
    subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)],
                   check=True)
    try:
        changed = env.fingerprint(env.describe())
    finally:
        # Leaves the cached environment as it was; checked below, never hiding a failure.
        subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "zoo_probe_conda"],
                       check=False)
    assert changed != before
    assert env.fingerprint(env.describe()) == before, "uninstalling restores the address"


def test_installing_a_conda_package_changes_the_address(tmp_path):
    python = f"python=={'.'.join(map(str, sys.version_info[:3]))}"
    prefix = tmp_path / "small"
    conda_install(prefix, [python])  # conda create -n small python
    env = PythonEnv("conda", str(prefix))
    before = env.fingerprint(env.describe())
    conda_install(prefix, [python, MARKER_PACKAGE])  # conda install zoo-ray-env-marker
    assert list((prefix / "conda-meta").glob(f"{MARKER_PACKAGE}-*.json"))
    assert env.fingerprint(env.describe()) != before
