"""Settings shared by every test."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

#: End-to-end tests start real daemons; none may hang a CI run.
E2E_TIMEOUT_S = 900


def pytest_collection_modifyitems(items):
    """Mark every test under tests/e2e as ``e2e`` (``-m "not e2e"`` is the fast loop)."""
    for item in items:
        if "e2e" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.e2e)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))


@pytest.fixture(scope="session", autouse=True)
def ray_temp_root():
    """Local Ray clusters of the tests' own (the ones zoo_ray does not start) keep their
    sessions here, not in /tmp/ray, where they would outlive the run. A short path: Ray's
    Unix sockets live below it."""
    root = Path(tempfile.mkdtemp(prefix="zrt-"))
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(root)
    yield root
    if saved is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = saved
    shutil.rmtree(root, ignore_errors=True)
