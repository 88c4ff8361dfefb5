"""The typed messages between driver, Spark tasks and RayManagers, and a manager's answer."""
from __future__ import annotations

import pickle
import subprocess
import sys
import time

import pytest

from zoo_ray.protocol import (
    ContainerMemory,
    ManagerState,
    NodeFailure,
    NodeInfo,
    NodeOutcome,
    NodeSpec,
    await_manager,
)


def _info():
    return NodeInfo(role="head", address="198.18.0.2:6379", pid=42, node_ip="198.18.0.2",
                    log_dir="/logs", temp_dir="/tmp/zoo-ray-abc", container="container_1",
                    dashboard_url="http://198.18.0.2:8265", work_dir="/w", executor_id="3",
                    executor_host="nm-1")


@pytest.mark.parametrize("message", [
    _info(),
    NodeFailure("start", "ray start exited with 2", log_tail="Error", container="c1"),
    ManagerState(pid=7, app_id="application_1_1", role="worker", temp_dir="/tmp/zoo-ray-1"),
    ContainerMemory(rss_bytes=2_362_232_012, processes=17, sampled_at=1796015750.25),
    NodeSpec(role="worker", app_id="a", token="secret", num_cpus=2, work_dir="/w", log_dir="/l",
             extra_params={"resources": '{"ssd": 1}'}, env={"A": "1"}),
])
def test_messages_round_trip_through_json(message):
    assert type(message).from_json(message.to_json()) == message


def test_unknown_fields_are_refused_not_dropped():
    with pytest.raises(ValueError, match="no fields \\['extra'\\]"):
        NodeFailure.from_json('{"kind": "start", "message": "m", "extra": 1}')


def test_task_outcomes_survive_pickling():
    outcome = NodeOutcome("ok", "container_1", node=_info())
    assert pickle.loads(pickle.dumps(outcome)) == outcome


def test_the_manager_state_file_is_written_read_and_removed_in_one_place(tmp_path):
    (tmp_path / ".zoo_ray").mkdir()
    assert ManagerState.read(tmp_path) is None
    state = ManagerState(pid=7, app_id="app", role="head", temp_dir="/tmp/r")
    state.write(tmp_path)
    assert ManagerState.read(tmp_path) == state
    ManagerState.remove(tmp_path)
    assert ManagerState.read(tmp_path) is None


def test_a_memory_sample_replaces_the_last_one_whole(tmp_path):
    ContainerMemory(1, 1, 1.0).write(tmp_path)
    ContainerMemory(2048, 3, 2.0).write(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [ContainerMemory.FILE]
    assert ContainerMemory.from_json((tmp_path / ContainerMemory.FILE).read_text()) == \
        ContainerMemory(2048, 3, 2.0)


def _fake_manager(code):
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_ready_answer_is_parsed():
    proc = _fake_manager(f"print('READY ' + {_info().to_json()!r}, flush=True)")
    assert await_manager(proc, timeout=60) == _info()
    proc.wait()


def test_a_manager_that_dies_before_answering_is_reported_at_once_with_its_stderr():
    proc = _fake_manager("import sys; import no_such_module_zoo")
    started = time.monotonic()
    answer = await_manager(proc, timeout=120)
    assert time.monotonic() - started < 60  # not the timeout
    assert isinstance(answer, NodeFailure) and answer.kind == "died"
    assert "exited with 1 before it answered" in answer.message
    assert "No module named 'no_such_module_zoo'" in answer.log_tail


def test_a_silent_manager_is_killed_at_the_timeout():
    proc = _fake_manager("import time; time.sleep(600)")
    answer = await_manager(proc, timeout=1)
    assert isinstance(answer, NodeFailure) and answer.kind == "timeout"
    assert proc.poll() is not None


def test_a_node_names_its_executor_as_a_spark_location():
    assert _info().spark_location == "executor_nm-1_3"
    assert NodeInfo(role="worker", address=None, pid=1, node_ip="x", log_dir="l", temp_dir="t",
                    container="c").spark_location is None
