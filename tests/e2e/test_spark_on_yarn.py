"""init_spark_on_yarn on the local Hadoop: shipped env, pack-once cache, bad input."""
from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from tests.e2e.helpers import localized_archives
from tests.wheels import make_wheel

from zoo_ray import init_spark_on_yarn
from zoo_ray.errors import (
    CondaEnvNotFoundError,
    ExecutorsNotStartedError,
    HadoopConfError,
    InvalidMemoryError,
    JavaNotFoundError,
    NoPythonEnvError,
    NotAPythonEnvError,
    QueueNotFoundError,
    ResourceManagerError,
)
from zoo_ray.hadoop_conf import HadoopConf
from zoo_ray.shipping import ship_environment

SMALL = dict(num_executors=2, executor_cores=1, executor_memory="512m", driver_memory="512m")


@pytest.fixture
def no_spark_left(cluster, no_shared_spark):
    """Before the test, the shared SparkContext is stopped; after it: no SparkContext in
    this process, no application RUNNING on YARN."""
    yield
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:
        active.stop()
        pytest.fail("the test left a SparkContext running")
    deadline = time.monotonic() + 30
    while cluster.resource_manager.apps(states="NEW,SUBMITTED,ACCEPTED,RUNNING"):
        assert time.monotonic() < deadline, "an application was left running on YARN"
        time.sleep(0.5)


def _pip(venv: Path, command: str, *args: str) -> None:
    offline = ["--no-index"] if command == "install" else []  # CI has no index
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "-q", command, *args, *offline,
                    "--disable-pip-version-check"], check=True, capture_output=True)


#: The payload of zoo_probe_big: a distribution large enough for a layer of its own.
_BIG_BYTES = 2 << 20


def _new_venv(where: Path, *wheels: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    for wheel in wheels:
        _pip(where, "install", str(wheel))
    return where


@pytest.fixture(scope="module")
def small_venv(tmp_path_factory):
    """A fresh venv holding a package that exists nowhere else on this machine."""
    root = tmp_path_factory.mktemp("venv")
    return _new_venv(root / "env", make_wheel(root, "zoo_probe_a", "only-in-the-test-env"),
                     make_wheel(root, "zoo_probe_big", "big-1", payload_bytes=_BIG_BYTES))


def _where(_):
    import os
    import sys

    import zoo_extra_lib
    import zoo_probe_a

    return (sys.executable, sys.prefix, os.environ["CONTAINER_ID"], zoo_probe_a.VALUE,
            zoo_extra_lib.ANSWER, os.environ.get("SPARK_USER"))


def _logged(caplog, prefix):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_executors_run_the_shipped_env_and_the_cache_packs_and_uploads_once(
        cluster, small_venv, tmp_path, caplog, no_spark_left):
    caplog.set_level(logging.INFO, logger="zoo_ray")
    probe_on_system = subprocess.run(["/usr/bin/env", "-i", "python3", "-c", "import zoo_probe_a"],
                                     capture_output=True)
    assert probe_on_system.returncode != 0
    extra_lib = tmp_path / "zoo_extra_lib.py"
    extra_lib.write_text("ANSWER = 42\n")
    conf_dir = str(cluster.hadoop_conf_dir)

    sc = init_spark_on_yarn(
        hadoop_conf=conf_dir, env_prefix=str(small_venv), extra_python_lib=str(extra_lib),
        extra_executor_memory_for_ray="512m",
        conf={"spark.executor.memoryOverhead": "1g"},
        **SMALL,
    )
    try:
        rows = set(sc.parallelize(range(8), 8).map(_where).collect())
        seen = sc.parallelize(range(4), 4).map(_executor_versions).collect()
        app_id = sc.applicationId
        assert sc.getConf().get("spark.executor.memoryOverhead") == "1536m"
        attempt = cluster.resource_manager.app_attempts(app_id)[-1]
        executors = cluster.resource_manager.containers(app_id, attempt["appAttemptId"])
        report = cluster.resource_manager.app(app_id)
    finally:
        sc.stop()
    # By default the ApplicationMaster ran in this process: no container of its own, so
    # nothing was localized for it (on this fresh local Hadoop, the environment and jars).
    assert report["unmanagedApplication"] is True and attempt["containerId"] == ""
    assert len(executors) == 2
    assert len({row[2] for row in rows}) == 2
    for executable, prefix, container_id, value, answer, user in rows:
        assert executable.endswith("/zoo_env/bin/python")
        assert container_id in executable and prefix.endswith("/zoo_env")
        assert (value, answer) == ("only-in-the-test-env", 42)
        # What a container ApplicationMaster handed executors, this driver does.
        assert user == getpass.getuser()
    # 512m heap + (1g the user asked for + 512m for Ray) overhead
    assert {c["allocatedMB"] for c in executors} == {512 + 1024 + 512}

    # In layers: the base (the interpreter; executors run ./zoo_env/bin/python), the top
    # (the small distributions, zoo_probe_a among them) and pip's own layer, assembled on
    # the executors into what the gateway's environment holds.
    _same_versions(seen, small_venv)
    first = ship_environment(conf_dir, env_prefix=str(small_venv))
    links = [part["link"] for part in first["parts"]]
    assert first["layered"] and links[:2] == ["zoo_env", "zoo_env_top"], links
    assert any(link.startswith("zl-") for link in links), links

    # pip install of one package: only the top layer is written, uploaded and localized.
    caplog.clear()
    _pip(small_venv, "install", str(make_wheel(tmp_path, "zoo_probe_b", "b")))
    again = ship_environment(conf_dir, env_prefix=str(small_venv))
    changed = [new for old, new in zip(first["parts"], again["parts"]) if old != new]
    assert [part["link"] for part in changed] == ["zoo_env_top"]
    assert len(again["parts"]) == len(first["parts"])
    uploads = _logged(caplog, "Uploading")
    assert len(uploads) == 1 and changed[0]["remote"] in uploads[0]
    share = changed[0]["bytes"] / again["bytes"]
    print(f"after pip install of one package: {changed[0]['bytes']} of {again['bytes']} "
          f"bytes shipped again ({share:.2%})")
    assert share < 0.10
    localized = localized_archives(cluster)
    # The environment as just shipped, and zoo_ray, pyspark and Spark's jars as the first
    # start shipped them: this start plans, packs and uploads nothing.
    caplog.clear()
    sc = init_spark_on_yarn(hadoop_conf=conf_dir, env_prefix=str(small_venv), **SMALL)
    try:
        seen = sc.parallelize(range(4), 4).map(_executor_versions).collect()
    finally:
        sc.stop()
    assert _logged(caplog, "Packing") == [] and _logged(caplog, "Uploading") == []
    assert _logged(caplog, "Planning") == [], "the plan of an unchanged env is reused"
    _same_versions(seen, small_venv)
    assert "zoo-probe-b" in {name.lower().replace("_", "-") for name in seen[0]}
    new = localized_archives(cluster) - localized
    assert {Path(changed[0]["remote"]).name} == {name for _, name in new}, new


def test_an_upgrade_and_an_uninstall_ship_only_their_layers_and_another_env_shares_layers(
        cluster, small_venv, tmp_path, caplog, no_spark_left):
    caplog.set_level(logging.INFO, logger="zoo_ray")
    conf_dir = str(cluster.hadoop_conf_dir)
    before = ship_environment(conf_dir, env_prefix=str(small_venv))

    # An upgrade of the large distribution and an uninstall of a small one: the top and
    # the upgraded distribution's layer are written and uploaded, nothing else.
    caplog.clear()
    big = make_wheel(tmp_path, "zoo_probe_big", "big-2", payload_bytes=_BIG_BYTES)
    _pip(small_venv, "install", "--upgrade", str(big))
    _pip(small_venv, "uninstall", "-y", "zoo_probe_a")
    after = ship_environment(conf_dir, env_prefix=str(small_venv))
    changed = [part for part in after["parts"] if part not in before["parts"]]
    gone = [part for part in before["parts"] if part not in after["parts"]]
    packed = _logged(caplog, "Packing the")
    print(f"after an upgrade and an uninstall: {sum(p['bytes'] for p in changed)} of "
          f"{after['bytes']} bytes shipped again; packed: {packed}")
    assert sorted(p["link"][:3] for p in changed) == ["zl-", "zoo"], changed
    assert len(gone) == 2 and len(after["parts"]) == len(before["parts"])
    assert len(packed) == 2 and any(re.search(r"the dist layer .*zoo.probe.big", m, re.I)
                                    for m in packed), packed
    uploads = _logged(caplog, "Uploading")
    assert sorted(u for p in changed for u in uploads if p["remote"] in u) == sorted(uploads)
    assert len(uploads) == 2
    localized = localized_archives(cluster)
    seen = _run_on_executors(conf_dir, small_venv, _executor_versions, _big_value)
    _same_versions([versions for versions, _ in seen], small_venv)
    assert {value for _, value in seen} == {"big-2"}
    assert "zoo-probe-a" not in {name.lower().replace("_", "-") for name in seen[0][0]}, \
        "the uninstalled package is gone on the executors"
    # Each NodeManager localizes just the layers it lacks (the changed ones, where it had
    # the environment); YARN places the executors on either, as it likes.
    new = _by_nodemanager(cluster, localized_archives(cluster) - localized)
    had = _by_nodemanager(cluster, localized)
    assert {Path(p["remote"]).name for p in changed} <= set().union(*new.values()), new
    for nodemanager, names in new.items():
        assert names <= _names(after) - had[nodemanager], (nodemanager, names)

    # Another environment with the same zoo_probe_big (and pip): their layers are the
    # ones already on HDFS and in the NodeManagers' caches.
    other = _new_venv(tmp_path / "other", big)
    caplog.clear()
    shipped = ship_environment(conf_dir, env_prefix=str(other))
    shared = [p for p in shipped["parts"] if p in after["parts"]]
    print(f"the other environment shares {len(shared)} of its {len(shipped['parts'])} layers "
          f"({sum(p['bytes'] for p in shared)} of {shipped['bytes']} bytes)")
    assert next(p for p in changed if p["link"].startswith("zl-")) in shared
    assert not any(p["remote"] in u for p in shared for u in _logged(caplog, "Uploading"))
    localized = localized_archives(cluster)
    seen = _run_on_executors(conf_dir, other, _executor_versions, _big_value)
    _same_versions([versions for versions, _ in seen], other)
    assert {value for _, value in seen} == {"big-2"}
    again = _by_nodemanager(cluster, localized_archives(cluster) - localized)
    had = _by_nodemanager(cluster, localized)
    assert again, "the other environment's own layers are localized"
    for nodemanager, names in again.items():
        # Never a layer a NodeManager holds (a shared one where it ran before).
        assert names <= _names(shipped) - had[nodemanager], (nodemanager, names)


def _names(shipped: dict) -> set[str]:
    """The archive names of an environment's layers (as ship_environment reports them)."""
    return {Path(p["remote"]).name for p in shipped["parts"]}


def _by_nodemanager(cluster, archives: set[tuple[str, str]]) -> dict[str, set[str]]:
    """Archive names by the NodeManager (``nm0``, ...) whose cache holds them."""
    found: dict[str, set[str]] = defaultdict(set)
    for directory, name in archives:
        found[Path(directory).relative_to(cluster.dir).parts[0]].add(name)
    return found


def _big_value(_) -> str:
    import zoo_probe_big

    return zoo_probe_big.VALUE


def _run_on_executors(conf_dir: str, venv: Path, *calls) -> list[tuple]:
    """What each call gives in each of four tasks, in an application on ``venv``."""
    sc = init_spark_on_yarn(hadoop_conf=conf_dir, env_prefix=str(venv), **SMALL)
    try:
        return sc.parallelize(range(4), 4).map(lambda i: tuple(c(i) for c in calls)).collect()
    finally:
        sc.stop()


def _executor_versions(_) -> dict[str, str]:
    from importlib import metadata

    return {d.metadata["Name"]: d.version for d in metadata.distributions()}


def _same_versions(seen: list[dict[str, str]], venv: Path) -> None:
    """Each executor sees every distribution of ``venv`` at its version on the gateway."""
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c",  # -I: not this process's PYTHONPATH
         "import json; from importlib import metadata; print(json.dumps("
         "{d.metadata['Name']: d.version for d in metadata.distributions()}))"],
        check=True, capture_output=True, text=True)
    gateway = json.loads(listed.stdout)
    for versions in seen:
        assert {name: versions.get(name) for name in gateway} == gateway


def test_queue_that_does_not_exist_lists_the_queues(cluster, no_spark_left):
    with pytest.raises(QueueNotFoundError, match="adhoc, batch, default, tiny"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), queue="nope", **SMALL)


def test_executor_bigger_than_any_node_fails_before_submitting(cluster, no_spark_left):
    apps_before = len(cluster.resource_manager.apps())
    largest = cluster.spec.nm_memory_mb
    with pytest.raises(ExecutorsNotStartedError,
                       match=f"largest NodeManager offers {largest} MB"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=1,
                           executor_memory=f"{largest + 1024}m")
    with pytest.raises(ExecutorsNotStartedError, match="executor_cores"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=1,
                           executor_cores=64, executor_memory="512m")
    assert len(cluster.resource_manager.apps()) == apps_before


def test_more_executors_than_the_cluster_can_give_times_out_and_kills_the_app(
        cluster, small_venv, no_spark_left):
    from pyspark import SparkContext

    with pytest.raises(ExecutorsNotStartedError, match="(?s)started \\d of 12 executors.*killed"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), env_prefix=str(small_venv),
                           num_executors=12, executor_cores=1, executor_memory="3g",
                           executor_timeout=20)
    assert SparkContext._active_spark_context is None
    last = max(cluster.resource_manager.apps(), key=lambda a: a["startedTime"])
    assert last["state"] == "KILLED"
    assert "executors started" in last["diagnostics"]


@pytest.mark.parametrize("unmanaged_am, match, diagnostics", [
    # A container ApplicationMaster that "tiny" cannot hold: Spark's client alone would
    # wait forever. (10 s: it stays ACCEPTED whatever the load, unlike an application
    # whose ApplicationMaster must start within the timeout.)
    ("false", r"(?s)stayed ACCEPTED in queue '(root\.)?tiny'.*killed.*queue=",
     "not scheduled within 10s"),
    # The ApplicationMaster in the driver (the default): the application runs, executors wait.
    ("true", r"(?s)started 0 of 2 executors within 10s \(queue tiny at its maximum: .*"
             r"an executor needs 896 MB.*killed.*another queue", "only 0 of 2 executors"),
])
def test_an_application_a_full_queue_never_runs_is_killed_with_the_queue_named(
        cluster, small_venv, no_spark_left, caplog, unmanaged_am, match, diagnostics):
    from pyspark import SparkContext

    caplog.set_level(logging.INFO, logger="zoo_ray.startup")
    with pytest.raises(ExecutorsNotStartedError, match=match):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), env_prefix=str(small_venv),
                           queue="tiny", executor_timeout=10,
                           conf={"spark.yarn.unmanagedAM.enabled": unmanaged_am}, **SMALL)
    assert SparkContext._active_spark_context is None
    last = max(cluster.resource_manager.apps(), key=lambda a: a["startedTime"])
    assert last["queue"] in ("tiny", "root.tiny") and last["state"] == "KILLED"
    assert last["unmanagedApplication"] is (unmanaged_am == "true")
    assert diagnostics in last["diagnostics"]
    assert any("is ACCEPTED" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"executor_memory": "2gg"}, InvalidMemoryError, "executor_memory='2gg'"),
    ({"executor_memory": "-1g"}, InvalidMemoryError, "executor_memory='-1g'"),
    ({"extra_executor_memory_for_ray": "1.5.5g"}, InvalidMemoryError, "1.5.5g"),
    ({"driver_memory": "lots"}, InvalidMemoryError, "driver_memory"),
    ({"conda_name": "zoo-ray-no-such-env"}, CondaEnvNotFoundError, "conda env list"),
    ({"env_prefix": "/usr"}, NoPythonEnvError, "neither a conda environment"),
    ({"penv_archive": "/no/such/env.tar.gz"}, NotAPythonEnvError, "does not exist"),
    ({"num_executors": 0}, Exception, "num_executors=0"),
])
def test_bad_input_is_a_typed_error_naming_the_fix(cluster, no_spark_left, kwargs, error, match):
    args = {**SMALL, **kwargs}
    with pytest.raises(error, match=match):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), **args)


def test_missing_or_invalid_hadoop_conf(tmp_path, monkeypatch, no_spark_left):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    with pytest.raises(HadoopConfError, match="HADOOP_CONF_DIR"):
        init_spark_on_yarn(**SMALL)
    with pytest.raises(HadoopConfError, match="does not exist"):
        init_spark_on_yarn(hadoop_conf=str(tmp_path / "nope"), **SMALL)
    (tmp_path / "core-site.xml").write_text("<configuration/>")
    with pytest.raises(HadoopConfError, match="yarn-site.xml"):
        init_spark_on_yarn(hadoop_conf=str(tmp_path), **SMALL)


def test_unreachable_resourcemanager(cluster, tmp_path, no_spark_left):
    conf = HadoopConf(cluster.hadoop_conf_dir)
    conf.set({"yarn-site.xml": {"yarn.resourcemanager.webapp.address": "127.0.0.1:1"}})
    conf.write(tmp_path / "conf")
    with pytest.raises(ResourceManagerError, match="127.0.0.1:1"):
        init_spark_on_yarn(hadoop_conf=str(tmp_path / "conf"), **SMALL)


def test_missing_java(cluster, tmp_path, monkeypatch, no_spark_left):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaNotFoundError, match="JAVA_HOME"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), **SMALL)


def test_prebuilt_archive_without_python_is_refused(tmp_path, cluster, no_spark_left):
    archive = shutil.make_archive(str(tmp_path / "env"), "gztar", root_dir=os.path.dirname(
        __file__), base_dir=".")
    with pytest.raises(NotAPythonEnvError, match="no bin/python"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), penv_archive=archive,
                           **SMALL)
