"""Build-once cache entries and content addresses."""
from __future__ import annotations

import threading
import time

import pytest

from zoo_ray.cache import build_once, digest


def test_digests_address_content_in_order():
    assert digest("a", b"b") == digest(b"a", "b")
    assert digest("ab") == digest("a", "b")  # the parts are hashed as one stream
    assert digest("a", "b") != digest("b", "a")
    assert len(digest("x")) == 20 and len(digest("x", length=12)) == 12


def test_an_entry_is_built_once_even_by_concurrent_callers(tmp_path):
    target = tmp_path / "entry.zip"
    builds = []

    def build(staging):
        builds.append(staging)
        time.sleep(0.2)  # the others must wait for this build, not start their own
        staging.write_text("built")

    results = []
    threads = [threading.Thread(target=lambda: results.append(build_once(target, build)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and sorted(results) == [False, False, False, True]
    assert target.read_text() == "built"
    assert {p.name for p in tmp_path.iterdir()} == {"entry.zip", "entry.zip.lock"}


def test_a_failed_build_leaves_no_entry_and_no_staging(tmp_path):
    target = tmp_path / "jars"

    def fail(staging):
        staging.mkdir()
        (staging / "half.jar").write_text("half")
        raise OSError("network down")

    with pytest.raises(OSError, match="network down"):
        build_once(target, fail)
    assert {p.name for p in tmp_path.iterdir()} == {"jars.lock"}
    assert build_once(target, lambda staging: staging.mkdir())
    assert target.is_dir()
