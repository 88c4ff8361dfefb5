"""RayContext's pure logic (no cluster): how start failures become one typed error."""
from __future__ import annotations

import json

import pytest

from zoo_ray.context import _raise_failures
from zoo_ray.errors import RayContextError, RayNodeStartError


def test_node_failures_become_one_error_with_each_executor_and_its_log_tail():
    start = json.dumps({"kind": "start", "message": "ray start exited with 2",
                        "log_tail": "Error: No such option: --no-such-flag"})
    results = [("ok", {"container": "container_1"}), ("skipped", {"container": "container_2"}),
               ("error", {"container": "container_3", "error": start}),
               ("error", {"container": "this host (the driver's node)",
                          "error": json.dumps({"message": "no answer in 5s"})})]
    with pytest.raises(RayNodeStartError) as failure:
        _raise_failures(results)
    text = str(failure.value)
    assert text.startswith("2 Ray node(s) failed to start; everything started was stopped.")
    assert "container_3: ray start exited with 2\nError: No such option: --no-such-flag" in text
    assert "this host (the driver's node): no answer in 5s" in text
    assert "container_1" not in text and "container_2" not in text


def test_an_object_store_larger_than_shm_names_the_fix():
    shm = json.dumps({"kind": "shm", "message": "object_store_memory=9 bytes exceeds the 8 "
                                                "bytes free in /dev/shm"})
    with pytest.raises(RayContextError, match="Lower object_store_memory below the free /dev/shm"):
        _raise_failures([("error", {"container": "container_1", "error": shm})])


def test_no_failure_raises_nothing():
    assert _raise_failures([("ok", {}), ("idle", {}), ("skipped", {})]) is None
