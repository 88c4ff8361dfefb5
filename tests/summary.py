"""The end-to-end summary's keys, shared by tests/conftest.py (which prints it) and
tests/e2e/conftest.py (which makes it), and whether this process is xdist's controller."""
from __future__ import annotations

import pytest

#: (section, line) pairs by worker ("" without xdist), for the summary at the run's end.
SUMMARY_LINES = pytest.StashKey[dict]()
#: The key of those pairs in an xdist worker's output to the controller.
WORKER_SUMMARY = "zoo_ray_summary"


def is_xdist_controller(config: pytest.Config) -> bool:
    """Whether this process is xdist's controller (it runs no test)."""
    return config.pluginmanager.has_plugin("dsession")
