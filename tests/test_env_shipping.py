"""Shipping an environment in layers (zoo_ray.env_shipping) with a real venv, against a
directory standing in for the cluster's file system (the upload path itself is tested end to
end on the local Hadoop: tests/e2e/test_spark_on_yarn.py)."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.wheels import make_wheel

from zoo_ray.env_shipping import ShippedEnv, ship_env
from zoo_ray.envs import PythonEnv


class _Dir:
    """What zoo_ray's uploads use of ClusterFileSystem, on a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads: list[str] = []

    def _local(self, uri: str) -> Path:
        return self.root / uri.split("://", 1)[1].lstrip("/")

    def status(self, path: str) -> dict[str, int] | None:
        local = self._local(path)
        return {"size": local.stat().st_size} if local.exists() else None

    def read_text(self, path: str) -> str | None:
        local = self._local(path)
        return local.read_text() if local.exists() else None

    def write_text(self, path: str, text: str) -> None:
        self._local(path).parent.mkdir(parents=True, exist_ok=True)
        self._local(path).write_text(text)

    def upload(self, local: Path, path: str, label: str = "upload") -> None:
        self.uploads.append(path)
        self._local(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, self._local(path))


@pytest.fixture
def venv(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_RAY_CACHE_DIR", str(tmp_path / "cache"))
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True)
    subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "-q", "install", "--no-index",
                    "--disable-pip-version-check", str(make_wheel(tmp_path, "ship_probe", "a"))],
                   check=True)
    return prefix


def _site(prefix: Path) -> Path:
    return next(prefix.glob("lib/python3*/site-packages"))


def test_an_env_ships_in_layers_once_and_a_stale_plan_is_made_again(
        venv, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zoo_ray")
    fs = _Dir(tmp_path / "hdfs")
    env = PythonEnv("venv", str(venv))
    first = ship_env(env, fs, "hdfs://nn/cache")  # type: ignore[arg-type]
    assert first.layered and [p.link for p in first.parts][:2] == ["zoo_env", "zoo_env_top"]
    assert sorted(fs.uploads) == sorted(p.remote for p in first.parts)
    assert all(p.remote.startswith("hdfs://nn/cache/layers/") for p in first.parts)
    assert ShippedEnv.from_dict(json.loads(json.dumps(first.to_dict()))) == first

    caplog.clear()
    fs.uploads.clear()
    assert ship_env(env, fs, "hdfs://nn/cache") == first  # type: ignore[arg-type]
    assert fs.uploads == [] and "Planning" not in caplog.text

    # The same packages, a file edited in place: the address (the package list) is the
    # same, so the layers are too, as with one archive. Should a layer have to be written
    # again (gone from the local cache), the edit is found and the plan made again.
    (_site(venv) / "ship_probe" / "__init__.py").write_text("VALUE = 'edited'\n")
    for archive in (tmp_path / "cache" / "layers").glob("*.tar.gz"):
        archive.unlink()
    again = ship_env(env, fs, "hdfs://nn/cache")  # type: ignore[arg-type]
    assert "Planning the layers again" in caplog.text
    assert [p.link for p, q in zip(first.parts, again.parts) if p != q] == ["zoo_env_top"]
    assert fs.uploads == [again.parts[1].remote]


def test_an_env_layers_cannot_reproduce_ships_as_one_archive(venv, tmp_path, caplog):
    # A file where zoo_ray would write the hook that assembles the layers.
    (_site(venv) / "zzzz_zoo_ray_env_layers.pth").write_text("\n")
    fs = _Dir(tmp_path / "hdfs")
    with caplog.at_level(logging.WARNING, logger="zoo_ray.env_layers"):
        shipped = ship_env(PythonEnv("venv", str(venv)), fs,
                           "hdfs://nn/cache")  # type: ignore[arg-type]
    assert not shipped.layered and [p.link for p in shipped.parts] == ["zoo_env"]
    assert shipped.parts[0].remote.startswith("hdfs://nn/cache/envs/venv-")
    assert fs.uploads == [shipped.parts[0].remote] and shipped.bytes > 0
    assert "exists already" in caplog.text and "one archive" in caplog.text


def test_an_editable_install_ships_in_layers_with_a_warning(venv, tmp_path, caplog):
    # What pip records for `pip install -e`: the code stays outside the environment.
    dist_info = next(_site(venv).glob("ship_probe-*.dist-info"))
    (dist_info / "direct_url.json").write_text(json.dumps(
        {"url": (tmp_path / "src").as_uri(), "dir_info": {"editable": True}}))
    with caplog.at_level(logging.WARNING, logger="zoo_ray"):
        shipped = ship_env(PythonEnv("venv", str(venv)), _Dir(tmp_path / "hdfs"),
                           "hdfs://nn/cache")  # type: ignore[arg-type]
    assert shipped.layered
    assert "without the code of its editable packages" in caplog.text
    assert "one archive" not in caplog.text


class _Together(_Dir):
    """Each upload waits until another runs beside it: fails unless layers ship in parallel."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.meet = threading.Barrier(2, timeout=20)

    def upload(self, local: Path, path: str, label: str = "upload") -> None:
        with contextlib.suppress(threading.BrokenBarrierError):  # the last one is alone
            if len(self.uploads) < 2:
                self.meet.wait()
        super().upload(local, path, label)


def test_layers_are_packed_and_uploaded_several_at_once(venv, tmp_path):
    fs = _Together(tmp_path / "hdfs")
    shipped = ship_env(PythonEnv("venv", str(venv)), fs, "hdfs://nn/cache")  # type: ignore[arg-type]
    assert shipped.layered and len(fs.uploads) == len(shipped.parts) >= 3
    assert not fs.meet.broken, "no two uploads ran at the same time"
