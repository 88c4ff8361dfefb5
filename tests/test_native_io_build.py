"""Building zoo_ray's libhadoop.so: when it cannot be built, the local Hadoop runs without it
and says why (the library itself is checked in tests/e2e/test_native_io.py)."""
from __future__ import annotations

import logging
import shutil

import pytest

from zoo_ray.minicluster import native_io


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_RAY_CACHE_DIR", str(tmp_path / "cache"))


def _java_home(tmp_path, jni_h: str | None):
    home = tmp_path / "jdk"
    (home / "include" / "linux").mkdir(parents=True)
    if jni_h is not None:
        (home / "include" / "jni.h").write_text(jni_h)
    return home


@pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")), reason="needs gcc")
def test_a_jdk_without_jni_headers_is_named_and_nothing_is_built(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert native_io.native_library_dir(_java_home(tmp_path, None)) is None
    assert "jni.h" in caplog.text and "Install gcc and a JDK with its headers" in caplog.text
    assert not (tmp_path / "cache" / "native").exists()


def test_no_compiler_is_named(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(native_io.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING):
        assert native_io.native_library_dir(_java_home(tmp_path, "")) is None
    assert "no gcc or cc on PATH" in caplog.text


@pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")), reason="needs gcc")
def test_a_failed_build_shows_the_compiler_s_error_and_leaves_no_entry(tmp_path, caplog):
    home = _java_home(tmp_path, "#error this jni.h is broken\n")
    with caplog.at_level(logging.WARNING):
        assert native_io.native_library_dir(home) is None
    assert "this jni.h is broken" in caplog.text
    assert not any(p.is_dir() for p in (tmp_path / "cache" / "native").iterdir())
