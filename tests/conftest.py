"""Settings shared by every test."""
from __future__ import annotations

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
