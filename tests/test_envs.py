"""Finding and fingerprinting Python environments (packing and shipping run in tests/e2e)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from zoo_ray.envs import editable_packages, find_env, warn_editable
from zoo_ray.errors import (
    CondaEnvNotFoundError,
    InvalidArgumentError,
    NoPythonEnvError,
    NotAPythonEnvError,
)


def test_the_running_venv_is_found_as_a_venv():
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests run outside a virtualenv")
    env = find_env()
    assert (env.kind, env.location) == ("venv", str(Path(sys.prefix).absolute()))


def test_a_prefix_that_is_no_env_names_the_fix(tmp_path):
    (tmp_path / "bin").mkdir()
    with pytest.raises(NoPythonEnvError, match="conda_name=, env_prefix= or penv_archive="):
        find_env(env_prefix=str(tmp_path))


def test_missing_conda_env_names_the_fix():
    with pytest.raises(CondaEnvNotFoundError, match="conda env list"):
        find_env(conda_name="zoo-ray-no-such-env")


def test_only_one_env_source_at_a_time(tmp_path):
    with pytest.raises(InvalidArgumentError, match="only one"):
        find_env(conda_name="x", env_prefix=str(tmp_path))


def test_missing_archive_is_refused(tmp_path):
    with pytest.raises(NotAPythonEnvError, match="does not exist"):
        find_env(penv_archive=str(tmp_path / "env.tar.gz"))


def test_archive_without_python_is_refused(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("not an interpreter")
    archive = tmp_path / "env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, "data.txt")
    with pytest.raises(NotAPythonEnvError, match="no bin/python"):
        find_env(penv_archive=str(archive))


def test_garbage_archive_is_refused(tmp_path):
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(NotAPythonEnvError, match="not a readable"):
        find_env(penv_archive=str(archive))


def test_hdfs_archive_is_used_as_is():
    env = find_env(penv_archive="hdfs://nn:8020/envs/py.tar.gz")
    assert (env.kind, env.location) == ("archive", "hdfs://nn:8020/envs/py.tar.gz")


def test_fingerprint_changes_when_a_package_is_installed(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")],
                   check=True)
    env = find_env(env_prefix=str(tmp_path / "v"))
    before = env.fingerprint(env.describe())
    assert env.fingerprint(env.describe()) == before
    site = next((tmp_path / "v" / "lib").glob("python*/site-packages"))
    dist = site / "zoo_probe-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-probe\nVersion: 1.0\n")
    assert env.fingerprint(env.describe()) != before


def _fake_conda_prefix(path: Path) -> Path:
    (path / "conda-meta").mkdir(parents=True)
    (path / "bin").mkdir()
    (path / "bin" / "python").symlink_to(sys.executable)
    return path


@pytest.fixture
def no_conda(monkeypatch, tmp_path):
    """No conda installation, no registry, no active env: only what a test sets."""
    for variable in ("CONDA_EXE", "CONDA_PREFIX", "CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("variable", ["CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"])
def test_conda_env_is_found_in_the_envs_path(no_conda, monkeypatch, tmp_path, variable):
    env = _fake_conda_prefix(tmp_path / "second" / "myenv")
    monkeypatch.setenv(variable, f"{tmp_path / 'first'}:{tmp_path / 'second'}")
    assert find_env(conda_name="myenv").location == str(env.resolve())


def test_conda_env_is_found_in_the_environments_registry(no_conda, tmp_path):
    env = _fake_conda_prefix(tmp_path / "elsewhere" / "myenv")
    registry = tmp_path / "home" / ".conda" / "environments.txt"
    registry.parent.mkdir(parents=True)
    registry.write_text(f"{tmp_path / 'elsewhere' / 'other'}\n\n{env}\n")
    assert find_env(conda_name="myenv").location == str(env.resolve())


def test_active_conda_env_and_its_siblings_are_found(no_conda, monkeypatch, tmp_path):
    active = _fake_conda_prefix(tmp_path / "root" / "envs" / "active")
    sibling = _fake_conda_prefix(tmp_path / "root" / "envs" / "sibling")
    monkeypatch.setenv("CONDA_PREFIX", str(active))
    assert find_env(conda_name="active").location == str(active.resolve())
    assert find_env(conda_name="sibling").location == str(sibling.resolve())


def test_missing_conda_env_lists_where_it_looked(no_conda, monkeypatch, tmp_path):
    monkeypatch.setenv("CONDA_ENVS_PATH", str(tmp_path / "envs"))
    with pytest.raises(CondaEnvNotFoundError, match=str(tmp_path / "envs" / "nope")):
        find_env(conda_name="nope")


def test_editable_packages_other_than_zoo_ray_are_named_missing(tmp_path, caplog):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    for name, editable in (("zoo_ray", True), ("mylib", True), ("plain", False)):
        dist = site / f"{name}-1.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "direct_url.json").write_text(json.dumps(
            {"url": f"file:///src/{name}", "dir_info": {"editable": editable}}))
    editable = editable_packages(tmp_path)
    assert editable == {"mylib": "file:///src/mylib", "zoo_ray": "file:///src/zoo_ray"}
    with caplog.at_level(logging.WARNING, logger="zoo_ray.envs"):
        warn_editable(tmp_path, editable)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "mylib (file:///src/mylib), zoo_ray (file:///src/zoo_ray)" in message
    assert "spark.yarn.dist.pyFiles" in message
    assert "mylib will be missing on the executors" in message
    assert "extra_python_lib=" in message
