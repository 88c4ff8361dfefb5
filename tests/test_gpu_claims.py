"""Executors' GPU claims on one host (zoo_ray.gpu_claims), with the local Hadoop's stand-in
nvidia-smi and real processes as the executors' JVMs; and the pre-flight's GPU check."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest

from zoo_ray import gpu_claims
from zoo_ray.errors import GpuClaimError, GpuRequestError
from zoo_ray.gpu_claims import (
    CLAIMS_DIR_ENV,
    NVIDIA_SMI_ENV,
    claim_gpus,
    claims_dir,
    container_gpus,
    discovery_script,
    host_gpus,
    sweep_claims,
)
from zoo_ray.minicluster.gpus import write_nvidia_smi
from zoo_ray.preflight import _check_gpus


@pytest.fixture
def smi(tmp_path, monkeypatch):
    """A host with 3 pretend devices, numbered 6-8 as a third NodeManager's (no cluster of
    the suite has one)."""
    smi = write_nvidia_smi(tmp_path / "bin", 2, 3)
    monkeypatch.setenv(NVIDIA_SMI_ENV, str(smi))
    return smi


@pytest.fixture
def host(smi, tmp_path, monkeypatch):
    """:func:`smi`'s host, its claims in a directory of the test's own."""
    monkeypatch.setenv(CLAIMS_DIR_ENV, str(tmp_path / "claims"))
    return smi


@pytest.fixture
def jvms():
    """Stand-ins for executors' JVMs: processes this test starts and ends."""
    started: list[subprocess.Popen] = []

    def start() -> psutil.Process:
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))
        return psutil.Process(started[-1].pid)

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_the_stand_in_lists_its_devices_as_nvidia_smi_does(host):
    assert host_gpus() == [(str(i), f"GPU-00000000-0000-0000-0002-{i:012d}") for i in (6, 7, 8)]
    xml = subprocess.run([str(host), "-x", "-q"], capture_output=True, text=True, check=True)
    assert xml.stdout.count("<minor_number>") == 3 and "<minor_number>8<" in xml.stdout
    bad = subprocess.run([str(host), "-L"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unsupported" in bad.stderr


def test_executors_on_one_host_get_distinct_devices_while_their_jvms_live(host, jvms):
    first, second, third = jvms(), jvms(), jvms()
    a = claim_gpus(2, "container_a", first)
    b = claim_gpus(1, "container_b", second)
    assert a.indices == ["6", "7"] and b.indices == ["8"]
    with pytest.raises(GpuClaimError, match=r"only 0 of the 3 .* container_a \(device 6\)"):
        claim_gpus(1, "container_c", third)
    # The first executor's JVM ends (YARN took its container): its devices are free again.
    first.kill()
    first.wait()
    assert claim_gpus(2, "container_c", third).indices == ["6", "7"]


def test_a_reused_pid_does_not_hold_a_claim(host, jvms):
    jvm = jvms()
    claim_gpus(3, "container_a", jvm)
    record = claims_dir() / "GPU-00000000-0000-0000-0002-000000000006.json"
    claim = json.loads(record.read_text())
    record.write_text(json.dumps({**claim, "started": claim["started"] - 3600}))
    assert claim_gpus(1, "container_b", jvms()).indices == ["6"]


def test_a_claims_directory_others_could_write_is_refused(host, jvms):
    claims_dir().mkdir(mode=0o777)
    claims_dir().chmod(0o777)
    with pytest.raises(GpuClaimError, match="not a directory of this user's alone"):
        claim_gpus(1, "container_a", jvms())
    claims_dir().rmdir()
    claims_dir().symlink_to("/tmp")
    with pytest.raises(GpuClaimError, match=CLAIMS_DIR_ENV):
        claim_gpus(1, "container_a", jvms())


def test_no_nvidia_smi_names_the_fix(monkeypatch, tmp_path, jvms):
    monkeypatch.delenv(NVIDIA_SMI_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gpu_claims, "_NVIDIA_SMI_DIRS", (str(tmp_path),))
    with pytest.raises(GpuClaimError, match=f"spark.executorEnv.{NVIDIA_SMI_ENV}"):
        claim_gpus(1, "container_a", jvms())


def test_spark_s_discovery_script_claims_for_the_jvm_that_runs_it(host, tmp_path):
    """The script as an executor runs it: in the container's directory, with the shipped
    zoo_ray zip and the environment's python, under the executor's JVM (here a short-lived
    python named java, whose end frees the devices)."""
    container = tmp_path / "container"
    container.mkdir()
    package = Path(gpu_claims.__file__).parent
    with zipfile.ZipFile(container / "zoo_ray-0123.zip", "w") as zf:
        for source in package.rglob("*.py"):
            zf.write(source, Path("zoo_ray") / source.relative_to(package))
    (container / "environment").symlink_to(Path(sys.executable).parent.parent)
    script = discovery_script(tmp_path / "scripts", "./environment/bin/python")
    java = tmp_path / "java"
    java.symlink_to(sys.executable)
    run_as_jvm = ("import subprocess, sys; r = subprocess.run([sys.argv[1]], capture_output=True,"
                  " text=True); print(r.stdout, end=''); sys.stderr.write(r.stderr)")
    env = {"PATH": "/usr/bin:/bin", NVIDIA_SMI_ENV: str(host), "ZOO_RAY_EXECUTOR_GPUS": "2",
           CLAIMS_DIR_ENV: str(claims_dir()), "CONTAINER_ID": "container_e01_0001_01_000002"}

    def run(argv: list[str], **more: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=container, env={**env, **more}, capture_output=True,
                              text=True, timeout=60)

    done = run([str(java), "-c", run_as_jvm, str(script)])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "gpu", "addresses": ["6", "7"]}
    held = container_gpus(container)
    assert held is not None and held.indices == ["6", "7"]
    assert (container / ".zoo_ray").stat().st_mode & 0o777 == 0o700
    # Its "JVM" has ended: a second run gets the same devices, and the claims go.
    again = run([str(java), "-c", run_as_jvm, str(script)])
    assert json.loads(again.stdout)["addresses"] == ["6", "7"], again.stderr
    assert len(sweep_claims()) == 2 and not list(claims_dir().glob("*.json"))
    too_many = run([str(java), "-c", run_as_jvm, str(script)], ZOO_RAY_EXECUTOR_GPUS="4")
    assert too_many.stdout == "" and "only 3 of the 3" in too_many.stderr
    # Not under an executor's JVM: no claim that nothing would ever free.
    orphan = run([sys.executable, "-c", run_as_jvm, str(script)])
    assert orphan.stdout == "" and "No executor JVM" in orphan.stderr
    assert not list(claims_dir().glob("*.json"))


class _RM:
    webapp_address = "rm:8088"

    def __init__(self, *gpus: int) -> None:
        self._nodes = [{"id": f"nm{i}:1", "totalResource": _resource(n)}
                       for i, n in enumerate(gpus)]

    def nodes(self, states: str | None = None) -> list[dict]:
        return self._nodes


def _resource(gpus: int) -> dict:
    return {"memory": 8192, "vCores": 8, "resourceInformations": {"resourceInformation": [
        {"name": "memory-mb", "value": 8192}, {"name": "yarn.io/gpu", "value": gpus}]}}


def test_pre_flight_refuses_gpus_the_cluster_cannot_give():
    queues = {"default": {"maxEffectiveCapacity": _resource(6)},
              "cpu": {"maxEffectiveCapacity": _resource(0)}}
    _check_gpus(_RM(2, 4), 4, "default", queues)
    with pytest.raises(GpuRequestError, match="at most 4 per executor"):
        _check_gpus(_RM(2, 4), 5, "default", queues)
    with pytest.raises(GpuRequestError, match="resource-plugins=yarn.io/gpu"):
        _check_gpus(_RM(0, 0), 1, "default", queues)
    with pytest.raises(GpuRequestError, match="queue 'cpu' may use at most 0 GPUs"):
        _check_gpus(_RM(2, 4), 1, "cpu", queues)
