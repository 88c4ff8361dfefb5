"""Helpers shared by the end-to-end tests (tests only, on the gateway).

Test modules import from here (and from :mod:`tests.e2e.scenarios`), never from each
other. Ray remote functions and Spark tasks that the tests define are local functions:
cloudpickle ships those by value, so an executor needs none of these modules.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from zoo_ray.applications import AppRecord
from zoo_ray.minicluster import MiniClusterSpec
from zoo_ray.protocol import WORK_DIR_ENV, ManagerState
from zoo_ray.yarn import FINAL_STATES

#: The notebooks users start from (``notebooks/``).
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"

#: The session cluster: two NodeManagers, each declaring more than this box has, so the
#: shared application and a second driver's application fit side by side; and less than
#: three of the shared application's executors, so its executors land on both (its start
#: puts the shipped environment into both NodeManagers' caches). Two pretend GPUs each
#: (test_gpus; YARN's GPU plugin changes nothing for applications that ask for none).
SESSION_SPEC = MiniClusterSpec(nodemanagers=2, nm_memory_mb=10240, nm_vcores=8, gpus=2)

#: The shared application, sized for both the RayContext tests (three executors, so a head
#: and two workers) and the data path's (2 cores and 1 GiB of heap per executor; a 1 GiB
#: object store holds the 400 MB conversion).
SHARED_SPARK_ARGS = dict(num_executors=3, executor_cores=2, executor_memory="1g",
                         driver_memory="1g", extra_executor_memory_for_ray="2g")
SHARED_OBJECT_STORE = "1g"

#: The secure local Hadoop, shared by the modules that need Kerberos
#: (test_secure_cluster), one that takes containers back (test_yarn_takes_executors) and
#: one that gives them back (test_yarn_elastic):
#: one local Hadoop and one cold first application for both, and YARN's memory kill and
#: preemption proven on Kerberos. NodeManagers that kill containers over their memory (the
#: suite's other clusters do not, as Hadoop without cgroups does not by default), and a
#: ResourceManager that preempts. 2 x 3072 MB, so a host holds one executor of 1920 MB and
#: not two. Delegation tokens that live a minute (renewed every 20 s), not a week, so that
#: an application of the suite outlives its first ones.
SECURE_SPEC = MiniClusterSpec(nodemanagers=2, nm_memory_mb=3072, nm_vcores=8,
                              enforce_memory=True, preemption=True, kerberos=True,
                              token_renew_interval_s=20, token_max_lifetime_s=60)


def keytab_login(cluster: Any) -> dict[str, str]:
    """``init_spark_on_yarn``'s login for the user of a secure local Hadoop, by keytab
    (nothing for one without Kerberos)."""
    security = cluster.security
    if security is None:
        return {}
    return {"principal": security.user, "keytab": str(security.user_keytab)}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``predicate`` every half second; return the seconds it took to hold, or fail
    naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout}s")


def process_name(process: psutil.Process) -> str:
    """The process's name, or "" once it has exited (Ray's idle workers come and go)."""
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def ray_processes(manager_pid: int) -> list[psutil.Process]:
    """Every process below a RayManager (its Ray node), or [] once it has gone."""
    try:
        return psutil.Process(manager_pid).children(recursive=True)
    except psutil.Error:
        return []


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def zoo_ray_processes(app_id: str) -> list[psutil.Process]:
    """Every RayManager, raylet and GCS of YARN application ``app_id``: in its containers
    (their ``CONTAINER_ID``) and on the gateway (the gateway's manager, from its state in
    the driver's work dir; its Ray processes, from the work dir their manager gave them).
    Not every one on the host: the other pytest worker's applications, and the other
    programs of this one, run theirs at the same time."""
    in_app = re.compile(rf"container_(e\d+_)?{re.escape(app_id.removeprefix('application_'))}_")
    gateway_managers = {state.pid for path in Path(tempfile.gettempdir()).glob("zoo-ray-driver-*")
                        if (state := ManagerState.read(path)) and state.app_id == app_id}

    def ours(proc: psutil.Process) -> bool:
        env = proc.info["environ"] or {}
        work_dir = env.get(WORK_DIR_ENV)
        state = ManagerState.read(work_dir) if work_dir else None
        return bool(in_app.match(env.get("CONTAINER_ID", ""))) or proc.pid in gateway_managers \
            or (state is not None and state.app_id == app_id)

    found = []
    for proc in psutil.process_iter(["name", "cmdline", "environ"]):
        if (proc.info["name"] in ("raylet", "gcs_server")
                or "zoo_ray.manager" in " ".join(proc.info["cmdline"] or [])) and ours(proc):
            found.append(proc)
    return found


def alive_nodes() -> list[dict]:
    """Ray's table of the live nodes of the cluster the driver is connected to, read as
    zoo_ray reads it: ``ray.nodes()`` ends the process (a failed check in Ray's
    GlobalStateAccessor) when its call is cancelled while the head's GCS restarts."""
    from zoo_ray.driver_guard import node_table

    return [n for n in node_table() if n["Alive"]]


def executor_nodes(timeout: float | None = None) -> dict[str, str]:
    """{node id: container id} of the Ray nodes in executors (not the gateway's), as each
    node answers a task pinned to it."""
    import ray

    @ray.remote(num_cpus=0)
    def whoami():
        return ray.get_runtime_context().get_node_id(), os.environ.get("CONTAINER_ID")

    found = {}
    for node in alive_nodes():
        strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)
        node_id, container = ray.get(whoami.options(scheduling_strategy=strategy).remote(),
                                     timeout=timeout)
        if container:
            found[node_id] = container
    return found


def answers(call: Callable[[], Any], expected: Any) -> bool:
    """Whether a Ray call answers ``expected`` now (a cluster being healed may not)."""
    import ray

    try:
        return ray.get(call(), timeout=5) == expected
    except (ray.exceptions.RayError, ConnectionError):
        return False


def executors_of(sc: Any) -> int:
    """The number of executors ``sc`` was configured with."""
    return int(sc.getConf().get("spark.executor.instances"))


def cores_of(sc: Any) -> int:
    """The cores of each of ``sc``'s executors."""
    return int(sc.getConf().get("spark.executor.cores"))


def start_driver(script: str, args: list[str], log: Path,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], dict]:
    """A second driver in its own Python: returns it and the JSON of its first line."""
    from tests.fresh import env_without_ray

    with open(log, "w") as stderr:
        driver = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=stderr, text=True,
                                  env=env if env is not None else env_without_ray())
    line = driver.stdout.readline()
    if not line.startswith("{"):
        driver.kill()
        driver.wait()
        raise AssertionError(f"the second driver failed:\n{Path(log).read_text()[-3000:]}")
    return driver, json.loads(line)


def localized_archives(cluster: Any) -> set[tuple[str, str]]:
    """The archives ``cluster``'s NodeManagers have localized, as (local dir, file name)."""
    return {(str(path.parent), path.name)
            for path in cluster.dir.glob("nm*/local/**/filecache/*/*.tar.gz")}


def wait_app_end(cluster: Any, app_id: str, timeout: float = 120) -> None:
    """Wait for a YARN application to reach a final state (its containers then free)."""
    wait_until(lambda: cluster.resource_manager.app(app_id)["state"] in FINAL_STATES, timeout,
               f"{app_id} to end")


def run_notebook(notebook: Any, cwd: Path, env: dict[str, str]) -> float:
    """Execute ``notebook`` (an nbformat node, filled with its outputs) cell by cell in a
    real Jupyter kernel started in ``cwd`` with exactly ``env``; return the seconds it took.
    A failing cell raises CellExecutionError, naming the cell and its traceback."""
    from nbclient import NotebookClient

    started = time.monotonic()
    # A kernel's start may take more than nbclient's 60 s while the suite's other worker
    # keeps both cores busy (seen once).
    NotebookClient(notebook, timeout=600, startup_timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return time.monotonic() - started


def notebook_problems(notebook: Any) -> list[Any]:
    """What says a notebook :func:`run_notebook` ran did not run whole: its code cells
    that did not run, and its error outputs ([] for a notebook that ran)."""
    code = [c for c in notebook.cells if c.cell_type == "code"]
    return ([c.source for c in code if not c.execution_count]
            + [o for c in code for o in c.outputs if o.output_type == "error"])


def program_env(cluster: Any) -> dict[str, str]:
    """The environment of a user's program on ``cluster``'s gateway: this process's, without
    its Ray session (:func:`tests.fresh.env_without_ray`), with ``HADOOP_CONF_DIR``."""
    from tests.fresh import env_without_ray

    return {**env_without_ray(), "HADOOP_CONF_DIR": str(cluster.hadoop_conf_dir)}


def end_program(proc: subprocess.Popen[str]) -> None:
    """End a program a test did not get to end as a user would, with Ctrl-C (it cleans up
    its application), and kill it if it is still there two minutes later."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: The ``zoo-ray`` command, as this process's Python runs it.
ZOO_RAY = [sys.executable, "-m", "zoo_ray.cli"]

#: ``zoo-ray submit``'s sizes for a small application: two executors of 1920 MB.
SUBMIT_SIZE = ["--num-executors", "2", "--executor-cores", "1", "--executor-memory", "512m",
               "--driver-memory", "512m", "--extra-executor-memory-for-ray", "1g",
               "--object-store-memory", "128m"]

#: A job started in the background of a shell (as CI may run us) ignores SIGINT, and so
#: would its children: the CLI gets the terminal's default, as under a user's shell. An exec
#: wrapper, not preexec_fn, which is unsafe in a process with threads (``ahead``'s).
_WITH_DEFAULT_SIGINT = [sys.executable, "-c", "import os, signal, sys; "
                        "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.argv[1], sys.argv[1:])"]


def zoo_ray_cli(args: list[str], env: dict[str, str],
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``zoo-ray ARGS`` as a user's shell would, to its end."""
    return subprocess.run([*ZOO_RAY, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def submit_in_background(script: Path, env: dict[str, str], err: Path,
                         cleanup: ExitStack) -> tuple[subprocess.Popen[str], dict]:
    """``zoo-ray submit`` (:data:`SUBMIT_SIZE`) of a script that prints one JSON line, then
    runs on: the CLI and that line. Its stderr goes to ``err``; it ends with ``cleanup`` at
    the latest."""
    with open(err, "w") as stderr:
        proc = subprocess.Popen([*_WITH_DEFAULT_SIGINT, *ZOO_RAY, "submit", *SUBMIT_SIZE,
                                 str(script)], env=env, stdout=subprocess.PIPE, stderr=stderr,
                                text=True)
    cleanup.callback(end_program, proc)
    line = proc.stdout.readline()
    if not line.startswith("{"):
        proc.kill()
        proc.wait()
        raise AssertionError(err.read_text()[-3000:])
    return proc, json.loads(line)


def assert_stop_leaves_alone(cluster: Any, app_id: str) -> None:
    """``zoo-ray stop`` of ``app_id``, a RUNNING application zoo_ray did not start (it lacks
    zoo_ray's YARN tag): refused, in one line naming YARN's own command, and the
    application runs on."""
    result = zoo_ray_cli(["stop", app_id], program_env(cluster), timeout=60)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and "yarn application -kill" in result.stderr
    assert cluster.resource_manager.app(app_id)["state"] == "RUNNING"


def ray_pids(app_id: str) -> list[int]:
    """The managers of a running application's Ray nodes (from its record, as ``zoo-ray
    status`` reads it) and every process below them."""
    record = AppRecord.read(app_id)
    assert record is not None, "a running RayContext records its cluster for status and stop"
    managers = [n["pid"] for n in record.nodes] + [record.gateway_manager_pid]
    below = [c.pid for m in managers for c in psutil.Process(m).children(recursive=True)]
    assert len(below) >= len(managers), "each manager runs its Ray node below it"
    return managers + below


def all_gone(pids: list[int], timeout: float = 60) -> bool:
    """Whether every process of ``pids`` has ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(running(p) for p in pids):
            return True
        time.sleep(0.5)
    return False
