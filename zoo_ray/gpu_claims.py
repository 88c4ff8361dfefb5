"""Which of its host's GPUs an executor holds: Spark's GPU discovery script, owned by zoo_ray.

Runs inside a YARN container, in a process Spark starts as the executor starts
(``python -m zoo_ray.gpu_claims``, through the script :func:`discovery_script` writes);
the executor's start task reads what it wrote (:func:`container_gpus`).

YARN counts ``yarn.io/gpu`` but tells a container which devices it got only where it
isolates them (the LinuxContainerExecutor with cgroups hides the others, so
``nvidia-smi`` lists just the container's). Where it does not (the DefaultContainerExecutor,
as on many clusters), every container on a host sees every device, and two executors
would pick the same. So executors claim devices: one claim file per device in the
claims directory (:func:`claims_dir`), taken under a host-wide lock, held while the
executor's JVM lives. A claim whose JVM is gone (matched by PID and start time) is free
again.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from .errors import GpuClaimError
from .host import private_dir_problem
from .protocol import STATE_DIR, _Message

__all__ = ["CLAIMS_DIR_ENV", "DISCOVERY_SCRIPT", "GPU_AMOUNT_CONF", "GPU_RESOURCE", "GPUS_ENV",
           "NVIDIA_SMI_ENV", "ContainerGpus", "GpuClaim", "claim_gpus", "claims_dir",
           "container_gpus", "discovery_script", "executor_jvm", "host_gpus", "sweep_claims"]

#: YARN's name of the GPU resource.
GPU_RESOURCE = "yarn.io/gpu"

#: The Spark property with an executor's GPUs (Spark asks YARN for as many).
GPU_AMOUNT_CONF = "spark.executor.resource.gpu.amount"

#: Names the ``nvidia-smi`` to run, where it is not on PATH (the local Hadoop sets it on
#: its containers: each NodeManager has a stand-in of its own).
NVIDIA_SMI_ENV = "ZOO_RAY_NVIDIA_SMI"

#: The executor's environment variable saying how many GPUs YARN gave its container.
GPUS_ENV = "ZOO_RAY_EXECUTOR_GPUS"

#: Names the claims directory, where the containers' ``/tmp`` is not the host's (a
#: container runtime's private ``/tmp``): a directory every container of the host sees.
CLAIMS_DIR_ENV = "ZOO_RAY_GPU_CLAIMS_DIR"

#: Where ``nvidia-smi`` lives when it is not on PATH (as YARN's GPU plugin looks).
_NVIDIA_SMI_DIRS = ("/usr/bin", "/bin", "/usr/local/nvidia/bin")

_RECORD = "gpus.json"

#: The discovery script's name in the executor's directory (shipped with the application).
DISCOVERY_SCRIPT = "zoo_ray_gpus.sh"


@dataclass(frozen=True)
class GpuClaim(_Message):
    """One device held by one executor's JVM."""

    uuid: str
    index: str
    container: str
    pid: int
    #: The JVM's start time (epoch seconds), so a reused PID does not hold the claim.
    started: float

    def held(self) -> bool:
        """Whether the JVM that claimed the device still runs."""
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except psutil.Error:
            return False


@dataclass(frozen=True)
class ContainerGpus(_Message):
    """The devices an executor holds: what its Ray node gets (``--num-gpus``, and
    ``CUDA_VISIBLE_DEVICES`` in the device indices the host numbers them by)."""

    indices: list[str]


def _nvidia_smi() -> str:
    if os.environ.get(NVIDIA_SMI_ENV):
        return os.environ[NVIDIA_SMI_ENV]
    found = shutil.which("nvidia-smi")
    for directory in _NVIDIA_SMI_DIRS:
        found = found or shutil.which("nvidia-smi", path=directory)
    if not found:
        raise GpuClaimError(
            "YARN gave this container GPUs, but nvidia-smi is neither on PATH nor in "
            f"{', '.join(_NVIDIA_SMI_DIRS)}; install NVIDIA's driver utilities on the "
            f"NodeManager hosts, or name it in the executors' {NVIDIA_SMI_ENV} "
            f"(spark.executorEnv.{NVIDIA_SMI_ENV}).")
    return found


def host_gpus() -> list[tuple[str, str]]:
    """The (index, uuid) of every GPU this container can see, as ``nvidia-smi`` lists them.

    Raises
    ------
    GpuClaimError
        ``nvidia-smi`` is missing or fails.
    """
    argv = [_nvidia_smi(), "--query-gpu=index,uuid", "--format=csv,noheader"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GpuClaimError(f"{argv[0]} did not run ({err}); check the GPU driver") from err
    if result.returncode != 0:
        raise GpuClaimError(f"{' '.join(argv)} failed (exit {result.returncode}): "
                            f"{result.stderr.strip()[-500:]}; check the GPU driver")
    devices = []
    for line in result.stdout.splitlines():
        index, _, uuid = (part.strip() for part in line.partition(","))
        if index and uuid:
            devices.append((index, uuid))
    return devices


def claims_dir() -> Path:
    """This user's claims directory on this host: :data:`CLAIMS_DIR_ENV`, or
    ``/tmp/zoo-ray-gpus-<uid>`` (a DefaultContainerExecutor runs every container as one
    user; where users differ, YARN isolates the devices)."""
    return Path(os.environ.get(CLAIMS_DIR_ENV) or f"/tmp/zoo-ray-gpus-{os.getuid()}")


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the host-wide lock of ``directory``, made private to this user if new.

    Raises
    ------
    GpuClaimError
        The directory is another user's, open to others, or not a directory.
    """
    try:
        problem = private_dir_problem(directory)
    except OSError as err:
        raise GpuClaimError(f"Cannot make the GPU claims directory {directory}: {err}; set "
                            f"spark.executorEnv.{CLAIMS_DIR_ENV} to a writable one.") from err
    if problem:
        raise GpuClaimError(
            f"The GPU claims directory {directory} {problem}; remove it, or set "
            f"spark.executorEnv.{CLAIMS_DIR_ENV} to a directory of your own.")
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _claims(directory: Path) -> dict[str, GpuClaim]:
    """The live claims in ``directory``; the others removed (their devices are free)."""
    found = {}
    for path in directory.glob("*.json"):
        claim = GpuClaim.load(path)
        if claim is not None and claim.held():
            found[claim.uuid] = claim
        else:
            path.unlink(missing_ok=True)
    return found


def sweep_claims() -> list[Path]:
    """Remove the claims of executors whose JVMs are gone (every zoo_ray start sweeps).

    Returns
    -------
    list of Path
        The claim files removed.
    """
    directory = claims_dir()
    if not directory.is_dir():
        return []
    with _locked(directory):
        before = set(directory.glob("*.json"))
        _claims(directory)
        return sorted(before - set(directory.glob("*.json")))


def claim_gpus(count: int, container: str, jvm: psutil.Process) -> ContainerGpus:
    """Claim ``count`` free devices of this host for the executor JVM ``jvm``.

    Parameters
    ----------
    count : int
        The GPUs YARN gave the container.
    container : str
        The container's id, named in the claims (and in another claimer's error).
    jvm : psutil.Process
        The executor's JVM: its devices are held as long as it runs.

    Returns
    -------
    ContainerGpus

    Raises
    ------
    GpuClaimError
        Fewer than ``count`` devices are free (the message names their holders), or
        ``nvidia-smi`` or the claims directory cannot be used.
    """
    devices = host_gpus()
    directory = claims_dir()
    with _locked(directory):
        held = _claims(directory)
        free = [(index, uuid) for index, uuid in devices if uuid not in held]
        if len(free) < count:
            holders = sorted({f"{c.container} (device {c.index})" for c in held.values()})
            raise GpuClaimError(
                f"YARN gave {container} {count} GPU(s), but only {len(free)} of the "
                f"{len(devices)} this host lists are free; held by {', '.join(holders) or 'none'}. "
                "The NodeManager does not isolate GPUs (DefaultContainerExecutor) and "
                "something else on the host holds them: give YARN's GPU plugin only the "
                "devices it may hand out (yarn.nodemanager.resource-plugins.gpu."
                "allowed-gpu-devices), or use the LinuxContainerExecutor with cgroups.")
        taken = free[:count]
        for index, uuid in taken:
            claim = GpuClaim(uuid, index, container, jvm.pid, jvm.create_time())
            (directory / f"{uuid}.json").write_text(claim.to_json())
    return ContainerGpus([index for index, _ in taken])


def container_gpus(work_dir: Path) -> ContainerGpus | None:
    """The devices the executor in ``work_dir`` claimed as it started.

    Parameters
    ----------
    work_dir : Path
        The container's working directory.

    Returns
    -------
    ContainerGpus or None
        None: the executor has no GPUs.
    """
    return ContainerGpus.load(work_dir / STATE_DIR / _RECORD)


def discovery_script(directory: Path, python: str) -> Path:
    """Write the script Spark runs to discover an executor's GPUs.

    Parameters
    ----------
    directory : Path
        Where to write it (on the gateway; Spark ships it with the application).
    python : str
        The executor's interpreter, relative to the container's directory.

    Returns
    -------
    Path
        An executable, as ``spark.executor.resource.gpu.discoveryScript`` wants, that runs
        this module with ``python`` and this zoo_ray (which the executor gets in its
        ``zoo_ray-*.zip``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DISCOVERY_SCRIPT
    staging = directory / f".{DISCOVERY_SCRIPT}.{os.getpid()}"
    staging.write_text(
        "#!/bin/sh\n"
        "# Spark's GPU discovery for zoo_ray's executors: see zoo_ray.gpu_claims.\n"
        'PYTHONPATH="$(ls ./zoo_ray-*.zip | head -n 1)" '
        f'exec {python} -m zoo_ray.gpu_claims\n')
    os.chmod(staging, 0o755)
    # Whole or not at all, should two drivers write it at once.
    staging.replace(path)
    return path


def executor_jvm() -> psutil.Process:
    """The executor's JVM this process runs under (Spark starts the script from it).

    Raises
    ------
    GpuClaimError
        No JVM above this process (it ended meanwhile, or the script ran by hand).
    """
    for parent in psutil.Process().parents():
        if parent.name() == "java":
            return parent
    raise GpuClaimError("No executor JVM above this process: zoo_ray's GPU discovery runs "
                        "from the executor Spark starts (spark.executor.resource.gpu."
                        "discoveryScript), which has ended or is not there.")


def main() -> int:
    """Claim the executor's GPUs; print them as Spark's discovery script must."""
    count = int(os.environ.get(GPUS_ENV) or 0)
    try:
        # The claims live as long as the JVM: Spark runs this script from it.
        jvm = executor_jvm()
        gpus = claim_gpus(count, os.environ.get("CONTAINER_ID", f"pid-{jvm.pid}"), jvm)
    except GpuClaimError as err:
        print(f"zoo_ray: {err}", file=sys.stderr)
        return 1
    state = Path.cwd() / STATE_DIR
    # The manager's state lives there too (its token among it): this user's only.
    state.mkdir(mode=0o700, exist_ok=True)
    (state / _RECORD).write_text(gpus.to_json())
    print(json.dumps({"name": "gpu", "addresses": gpus.indices}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
