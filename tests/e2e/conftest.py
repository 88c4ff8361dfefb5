"""Fixtures that run the real local Hadoop, and the clusters the end-to-end tests share.

One local Hadoop serves the session (``cluster``). On it, one YARN application with one
RayContext (``sc``, ``ray_ctx``, ``spark``: the *shared* cluster) serves every test that
leaves it healthy. Tests that break Ray run after those, on it while it is whole and
on a new RayContext on the shared SparkContext when not (``breakable_ray_ctx``,
seconds), not on an application of their own. Tests that
start a SparkContext in this process (one per process is all PySpark allows) first stop
the shared one (``no_shared_spark``); a module whose application must differ (Spark's
settings under test, an application that dies) starts its own (``module_sc``); a module
that needs another kind of Hadoop starts its own (``own_cluster``), which the next modules
of the same kind share.

The order of the tests follows from that, and ``tests/conftest.py`` makes it so: see
:data:`PHASES` there.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.e2e import helpers, scenarios
from tests.e2e.helpers import SESSION_SPEC, SHARED_OBJECT_STORE, SHARED_SPARK_ARGS, keytab_login
from tests.summary import SUMMARY_LINES, WORKER_SUMMARY, is_xdist_controller

from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

#: How long the first application on a local Hadoop may wait for its executors: every
#: NodeManager first downloads and unpacks the shipped environment (about 1 GB; minutes
#: on a 2-core box). zoo_ray's default, 300 s, is for a cluster that has it cached.
FIRST_APP_TIMEOUT_S = 900.0

#: What the run started, for the summary at its end.
APPLICATIONS = pytest.StashKey[dict]()
SHARED_STARTS = pytest.StashKey[dict]()


#: A local Hadoop of yours for the session to reuse, for a quick loop: start it once with
#: ``zoo-ray minicluster up --dir DIR --nm-memory-mb 10240 --gpus 2`` (:data:`SESSION_SPEC`) and
#: set this variable to DIR. Its NodeManagers keep the shipped environment cached between
#: runs (a fresh local Hadoop spends minutes unpacking it), and the tests leave it running.
REUSE_HADOOP_DIR = "ZOO_RAY_TEST_HADOOP_DIR"


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory: pytest.TempPathFactory,
                    request: pytest.FixtureRequest) -> Iterator[MiniCluster]:
    """A running local Hadoop, started once for the session and stopped at its end (or
    the running one named by :data:`REUSE_HADOOP_DIR`, left running)."""
    where = os.environ.get(REUSE_HADOOP_DIR)
    path = Path(where) if where else tmp_path_factory.mktemp("hadoop")
    with MiniCluster(path, spec=SESSION_SPEC) as running:
        yield running
        _count_applications(request.config, "session", running)


@pytest.fixture(scope="session")
def cluster(session_cluster: MiniCluster) -> MiniCluster:
    """The local Hadoop the test runs on: the session's, unless its module overrides this
    with ``own_cluster`` (the shared fixtures depend on ``session_cluster``, never on
    this name, so a module's override leaves them alone)."""
    return session_cluster


def _count_applications(config: pytest.Config, name: str, cluster: MiniCluster) -> None:
    """Note how many YARN applications ran on ``cluster`` (printed at the session's end)."""
    try:
        apps = len(cluster.resource_manager.apps())
    except Exception:  # a count for the summary must not fail a teardown
        apps = "? (its ResourceManager is down: a test stopped it)"
    config.stash.setdefault(APPLICATIONS, {})[name] = apps



@pytest.fixture(autouse=True)
def _ship_test_code_by_value(request: pytest.FixtureRequest) -> None:
    """Executors cannot import the tests: Spark ships their functions by value, and Ray
    those of the shared helpers."""
    from pyspark import cloudpickle
    from ray import cloudpickle as ray_cloudpickle

    for module in (sys.modules[request.module.__name__], helpers, scenarios):
        cloudpickle.register_pickle_by_value(module)
    for module in (helpers, scenarios):
        ray_cloudpickle.register_pickle_by_value(module)


# ------------------------------------------------------------ the shared cluster
class SharedCluster:
    """The session's shared SparkContext and RayContext, started when first asked for,
    stopped when a test needs this process without them, started again if asked for
    after that (the test order makes that not happen in a whole run)."""

    def __init__(self, cluster: MiniCluster, starts: dict[str, int]) -> None:
        self.cluster = cluster
        self.starts = starts
        self._sc: Any = None
        self._spark: Any = None
        self._ray: Any = None

    @property
    def executors(self) -> int:
        return int(SHARED_SPARK_ARGS["num_executors"])

    def spark_context(self) -> Any:
        from zoo_ray import init_spark_on_yarn

        if self._sc is None:
            # The session cluster's first application: its executors wait while every
            # NodeManager unpacks the shipped environment (minutes on a small box).
            self._sc = init_spark_on_yarn(hadoop_conf=str(self.cluster.hadoop_conf_dir),
                                          executor_timeout=FIRST_APP_TIMEOUT_S,
                                          **SHARED_SPARK_ARGS)
            self.starts["SparkContext"] = self.starts.get("SparkContext", 0) + 1
        return self._sc

    def spark_session(self) -> Any:
        from pyspark.sql import SparkSession

        if self._spark is None:
            self._spark = SparkSession(self.spark_context())
        return self._spark

    def ray_context(self) -> Any:
        """The shared RayContext, whole: every executor's Ray node alive, none lost. It is
        started anew (seconds, on the same application) if a test left it otherwise."""
        import ray

        from zoo_ray import RayContext

        if not self._whole():
            self.stop_ray()
            sc = self.spark_context()
            self.wait_for_executors()
            self._ray = RayContext(sc, object_store_memory=SHARED_OBJECT_STORE)
            self._ray.init()
            ray.init()  # an unchanged program's own call: joins through RAY_ADDRESS
            self.starts["RayContext"] = self.starts.get("RayContext", 0) + 1
        return self._ray

    def _whole(self) -> bool:
        if self._ray is None or not self._ray.initialized:
            return False
        try:
            status = self._ray.node_status()
        except Exception:  # the cluster is gone (ClusterLostError) or going
            return False
        return len(status) == self.executors and all(s["alive"] for s in status)

    def wait_for_executors(self) -> None:
        """Until Spark has every executor again (a test that lost one got a replacement)."""
        from zoo_ray.spark_internals import registered_executors

        helpers.wait_until(lambda: registered_executors(self._sc) >= self.executors, 300,
                           f"{self.executors} executors in the shared application")

    def stop_ray(self) -> None:
        """Stop whichever RayContext runs in this process (the shared one or a test's)."""
        from zoo_ray import RayContext

        active = RayContext._active
        if active is not None and active.initialized:
            active.stop()
        if self._ray is not None and self._ray.initialized:
            self._ray.stop()
        self._ray = None

    def release(self) -> None:
        """Stop the shared RayContext and SparkContext: the process is free for another."""
        self.stop_ray()
        if self._sc is not None:
            self._sc.stop()
        self._sc = self._spark = None


#: The shared cluster's keeper while the session has one.
_KEEPERS: list[SharedCluster] = []


def release_shared() -> None:
    """Stop the shared RayContext and SparkContext if they run; starts nothing (not even
    the session's local Hadoop), for tests and modules that need neither."""
    for keeper in _KEEPERS:
        keeper.release()


@pytest.fixture(scope="session")
def shared(session_cluster: MiniCluster,
           request: pytest.FixtureRequest) -> Iterator[SharedCluster]:
    """The shared cluster's keeper; at the session's end nothing of it runs."""
    keeper = SharedCluster(session_cluster, request.config.stash.setdefault(SHARED_STARTS, {}))
    _KEEPERS.append(keeper)
    yield keeper
    _KEEPERS.remove(keeper)
    keeper.release()


#: The fixtures that run on the shared cluster.
_ON_SHARED = {"shared", "sc", "spark", "ray_ctx", "no_ray_context", "breakable_ray_ctx"}


@pytest.fixture(autouse=True)
def _shared_stops_before_others(request: pytest.FixtureRequest) -> None:
    """A test that does not run on the shared cluster has the machine to itself: the
    shared application stops before the first such test (tests/conftest.py orders every
    test that uses it before them)."""
    if not _ON_SHARED & set(request.fixturenames):
        release_shared()


@pytest.fixture
def sc(shared: SharedCluster) -> Any:
    """The shared SparkContext (init_spark_on_yarn with :data:`SHARED_SPARK_ARGS`)."""
    return shared.spark_context()


@pytest.fixture
def spark(shared: SharedCluster) -> Any:
    """A SparkSession on the shared SparkContext."""
    return shared.spark_session()


@pytest.fixture
def ray_ctx(shared: SharedCluster) -> Any:
    """The shared RayContext: tests that use it leave it whole."""
    return shared.ray_context()


@pytest.fixture
def no_ray_context(shared: SharedCluster) -> Any:
    """The shared SparkContext with no RayContext running in this process."""
    shared.stop_ray()
    return shared.spark_context()


@pytest.fixture
def breakable_ray_ctx(shared: SharedCluster) -> Any:
    """A whole RayContext on the shared SparkContext for a test that kills, loses or stops
    what it runs on. It is the shared one while that is whole (these tests run after every
    test that needs it healthy), else a new one: seconds to start, where an application
    takes a minute."""
    return shared.ray_context()


@pytest.fixture
def no_shared_spark() -> None:
    """No SparkContext in this process: the test starts its own."""
    release_shared()


# ------------------------------------------------- a module's own application
@pytest.fixture(scope="module")
def module_sc(cluster: MiniCluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """init_spark_on_yarn with the test module's ``SPARK_ARGS`` on ``cluster``, for the
    whole module: for a module that needs Spark settings the shared application does not
    have, or another local Hadoop."""
    from zoo_ray import init_spark_on_yarn

    release_shared()
    # On a module's own local Hadoop this is the first application (see SharedCluster).
    sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir),
                            **{"executor_timeout": FIRST_APP_TIMEOUT_S, **keytab_login(cluster),
                               **request.module.SPARK_ARGS})
    yield sc
    sc.stop()


@pytest.fixture(scope="module")
def module_ray_ctx(module_sc: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A RayContext on ``module_sc`` with the module's ``OBJECT_STORE_MEMORY``, joined as
    an unchanged program joins it (``ray.init()``)."""
    import ray

    from zoo_ray import RayContext

    ctx = RayContext(module_sc, object_store_memory=request.module.OBJECT_STORE_MEMORY)
    ctx.init()
    ray.init()
    yield ctx
    if ctx.initialized:
        ctx.stop()


@pytest.fixture(scope="module")
def module_spark(module_sc: Any) -> Any:
    """A SparkSession on ``module_sc``."""
    from pyspark.sql import SparkSession

    return SparkSession(module_sc)


# ------------------------------------------------- programs started ahead
@pytest.fixture(scope="module")
def ahead(cluster: MiniCluster, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """The independent programs a module's tests check, all started together when the first
    of those tests runs, each in a directory of its own: while one waits for YARN, the others
    use the CPU. The module's ``AHEAD`` maps a test's name (with its parameters) to its
    program, a callable taking the module's local Hadoop, that directory and an ExitStack
    for what must end with the module (a program left running: see ``helpers.end_program``);
    only the selected tests' programs run. At the module's end every program has ended."""
    selected = {item.name for item in request.session.items if item.module is request.module}
    jobs = {name: job for name, job in request.module.AHEAD.items() if name in selected}
    release_shared()
    with ExitStack() as cleanup, ThreadPoolExecutor(max_workers=max(1, len(jobs)),
                                                    thread_name_prefix="ahead") as pool:
        # The pool is left first: every program has returned before the cleanup runs.
        yield {name: pool.submit(job, cluster, tmp_path_factory.mktemp(_dir_name(name)),
                                 cleanup) for name, job in jobs.items()}


def _dir_name(test_name: str) -> str:
    """A test's name (parameters kept: they tell programs apart) as a directory name."""
    return re.sub(r"\W+", "_", test_name)[-40:]


@pytest.fixture
def ahead_result(ahead: dict[str, Future[Any]], request: pytest.FixtureRequest) -> Any:
    """What this test's program (see ``ahead``) returned; its exception if it raised."""
    return ahead[request.node.name].result()


# ------------------------------------------------------ a module's own Hadoop
class OwnClusters:
    """The local Hadoop of the modules that need another kind than the session's (their
    ``SPEC``): one at a time, kept from one module to the next that asks for an equal
    spec (a start and a cold first application less), stopped when a module asks for
    another spec, a test is done stopping it, or the session ends."""

    def __init__(self, factory: pytest.TempPathFactory, config: pytest.Config) -> None:
        self._factory = factory
        self._config = config
        self._running: tuple[str, MiniClusterSpec, MiniCluster, ExitStack] | None = None

    def get(self, name: str, spec: MiniClusterSpec) -> MiniCluster:
        """The running local Hadoop of ``spec``, started (as ``name``) if it does not run."""
        if self._running is not None and self._running[1] == spec:
            return self._running[2]
        self.close()
        stack = ExitStack()
        running = stack.enter_context(_module_cluster(self._factory, name, spec))
        self._running = (name, spec, running, stack)
        return running

    def count_applications(self) -> None:
        """Note how many applications ran on the running one (see ``_count_applications``)."""
        if self._running is not None:
            name, _, running, _ = self._running
            _count_applications(self._config, name, running)

    def close(self) -> None:
        """Stop the running one, if any (idempotent)."""
        if self._running is None:
            return
        _, _, running, stack = self._running
        if running.running:
            self.count_applications()
        self._running = None
        stack.close()


@pytest.fixture(scope="session")
def own_clusters(tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[OwnClusters]:
    """The keeper of the modules' own local Hadoops; at the session's end none runs."""
    keeper = OwnClusters(tmp_path_factory, request.config)
    yield keeper
    keeper.close()


@pytest.fixture(scope="module")
def own_cluster(own_clusters: OwnClusters, request: pytest.FixtureRequest) -> MiniCluster:
    """The test module's own local Hadoop (its ``SPEC``), beside the session's; shared with
    the next modules of an equal ``SPEC``. A module that uses it overrides ``cluster`` with
    it."""
    from zoo_ray import spark_internals

    release_shared()
    # Each module's in-process Spark starts afresh, also on a Hadoop an earlier module used.
    spark_internals.stop_jvm()
    return own_clusters.get(request.module.__name__.rsplit(".", 1)[-1], request.module.SPEC)


@pytest.fixture
def own_cluster_to_stop(own_cluster: MiniCluster, own_clusters: OwnClusters
                        ) -> Iterator[MiniCluster]:
    """The module's own local Hadoop for a test that stops it: that test runs after every
    test of every module on it (tests/conftest.py), and the keeper lets it go after."""
    own_clusters.count_applications()  # while its ResourceManager still answers
    yield own_cluster
    own_clusters.close()


@contextmanager
def _module_cluster(tmp_path_factory: pytest.TempPathFactory, name: str,
                    spec: MiniClusterSpec) -> Iterator[MiniCluster]:
    """Run ``spec`` for one module. PySpark's JVM is started afresh on the way in and out,
    and what zoo_ray left in the environment for this cluster (its Hadoop configuration
    and pyspark.zip) is restored on the way out, so later modules run on the session's."""
    from zoo_ray import spark_internals

    # KRB5_CONFIG: a secure cluster's realm joins the process (Realm.make_known).
    saved = {k: os.environ.get(k)
             for k in ("HADOOP_CONF_DIR", "PYSPARK_ARCHIVES_PATH", "KRB5_CONFIG")}
    spark_internals.stop_jvm()
    try:
        with MiniCluster(tmp_path_factory.mktemp(name), spec=spec) as running:
            yield running
    finally:
        spark_internals.stop_jvm()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------- a plain SparkContext on YARN
@pytest.fixture
def spark_on_yarn(cluster: MiniCluster, monkeypatch: pytest.MonkeyPatch,
                  no_shared_spark: None) -> Iterator[Any]:
    """A factory of SparkContexts with master yarn (client mode) on the session cluster,
    in a JVM of their own: PySpark's JVM keeps the settings of the SparkContext it was
    started for (zoo_ray's tags and archives, as system properties), which a plain
    SparkContext in the same JVM would inherit."""
    from zoo_ray import spark_internals

    spark_internals.stop_jvm()
    yield lambda **conf: _spark_on_yarn(cluster, monkeypatch, **conf)
    spark_internals.stop_jvm()


@contextmanager
def _spark_on_yarn(cluster: MiniCluster, monkeypatch: pytest.MonkeyPatch, **conf: str):
    from pyspark import SparkConf, SparkContext

    monkeypatch.setenv("HADOOP_CONF_DIR", str(cluster.hadoop_conf_dir))
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark_conf = (
        SparkConf()
        .setMaster("yarn")
        .setAppName("zoo-ray-test")
        .set("spark.submit.deployMode", "client")
        .set("spark.driver.memory", "512m")
        .set("spark.yarn.am.memory", "512m")
        .set("spark.ui.showConsoleProgress", "false")
        # A plain SparkContext has no zoo_ray start to retry Spark's UI race (Jetty's
        # ConcurrentModificationException when the ApplicationMaster registers while the
        # UI attaches its handlers, seen under load); these tests need no UI.
        .set("spark.ui.enabled", "false")
        # The local Hadoop is on loopback; left to itself Spark would advertise the newest
        # interface's address, which may be a bridge of the isolated hosts beside us.
        .set("spark.driver.host", "127.0.0.1")
    )
    for key, value in conf.items():
        spark_conf.set(key, value)
    sc = SparkContext(conf=spark_conf)
    try:
        yield sc
    finally:
        sc.stop()


LEFTOVERS = pytest.StashKey[list]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Nothing the tests started may outlive the run: once every fixture is torn down,
    end what still runs below this process (by PID; Spark's JVM, which PySpark keeps
    until Python exits, aside) and name it in the summary, where it shows a teardown
    that leaks. xdist's controller runs no test (its children are the workers): each
    worker sends its summary there (tests/conftest.py prints it)."""
    if is_xdist_controller(session.config):
        return
    import psutil
    from pyspark import SparkContext

    gateway = getattr(SparkContext._gateway, "proc", None)
    keep = {gateway.pid} if gateway is not None else set()
    try:
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
    except psutil.Error:
        left = []
    named = []
    for proc in left:
        try:
            named.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            proc.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(left, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    session.config.stash[LEFTOVERS] = named
    lines = _summary(session.config)
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output[WORKER_SUMMARY] = lines
    else:
        session.config.stash[SUMMARY_LINES] = {"": lines}


def _summary(config: pytest.Config) -> list[tuple[str, str]]:
    """(section, line) pairs: what the run started and what it left running."""
    apps = config.stash.get(APPLICATIONS, {})
    starts = config.stash.get(SHARED_STARTS, {})
    lines = [("processes the tests left running (ended now)", line)
             for line in config.stash.get(LEFTOVERS, [])]
    if apps:
        lines.append(("clusters", "YARN applications per local Hadoop: "
                      + ", ".join(f"{name} {n}" for name, n in apps.items())))
    if starts:
        lines.append(("clusters", "shared cluster, started in its worker: "
                      + ", ".join(f"{what} {n}" for what, n in starts.items())))
    return lines
