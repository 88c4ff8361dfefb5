"""Settings shared by every test, and the order the tests run in."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tests.summary import SUMMARY_LINES, WORKER_SUMMARY

#: End-to-end tests start real daemons; none may hang a CI run.
E2E_TIMEOUT_S = 900

#: The order of the tests, by what they run on (the fixtures of tests/e2e/conftest.py).
#: The end-to-end tests share clusters, so the order is what keeps each test's cluster in
#: the state the test expects, and each cluster started once:
#:
#: 0. unit tests: no cluster; first, so a broken change fails in seconds;
#: 1. tests on the shared SparkContext that need no RayContext running (they stop it):
#:    before the shared RayContext starts, so it starts once. The shared application is
#:    the session cluster's first: its start (with a timeout sized for it) puts the
#:    shipped environment into every NodeManager's cache, which takes minutes on a small
#:    box, so that the programs later tests start, with zoo_ray's default timeouts, find
#:    it there;
#: 2. tests on the shared, healthy RayContext: they leave it whole;
#: 3. tests that kill, lose or stop Ray (``breakable_ray_ctx``): after every test that
#:    needs the shared RayContext healthy, as they may leave it broken;
#: 4. the other end-to-end tests on the session's local Hadoop: they start programs of
#:    their own (CLI, notebooks, drivers in subprocesses) or none; the shared application
#:    is stopped before the first of them (YARN's room and the CPU are theirs);
#: 5. tests that start a SparkContext of their own in this process (PySpark allows one);
#: 6. modules with a local Hadoop of their own (``own_cluster``): one at a time, modules
#:    of an equal spec on the same one, one after the other;
#: 7. tests that stop such a local Hadoop (``own_cluster_to_stop``): after every test on it
#:    (right after, and before the next spec's modules).
#:
#: The first matching rule below wins; within a phase, tests keep their file order.
#:
#: The run has two pytest workers (pytest-xdist's ``-n 2`` in ``addopts``, pyproject.toml;
#: ``-n 0`` runs every test in one process). The modules of :data:`BESIDE` run in the
#: second, in their own order (phases 6 and 7), while the first runs every other test in
#: the order above: the modules with a local Hadoop of their own beside those on the
#: session's. They leave the CPU idle a third of their time (a host cut off for a minute, a
#: killed NodeManager, delegation tokens let expire), and so do the first worker's first
#: phases. Each worker is a process of its own, so PySpark's one SparkContext per process
#: and the environment variables a cluster sets (a secure one's KRB5_CONFIG) stay apart.
PHASES = (
    (7, {"own_cluster_to_stop"}),
    (6, {"own_cluster"}),
    (5, {"no_shared_spark", "module_sc", "spark_on_yarn"}),
    (3, {"breakable_ray_ctx"}),
    (1, {"no_ray_context"}),
    (2, {"ray_ctx", "sc", "spark", "shared"}),
)
STANDALONE_PHASE = 4
OWN_CLUSTER_PHASE = 6

#: The test modules that run beside the others, in the second worker: every module with a
#: local Hadoop of its own (``own_cluster``).
BESIDE = frozenset({"test_isolated_hosts.py", "test_secure_cluster.py",
                    "test_yarn_elastic.py", "test_yarn_takes_executors.py"})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scheduler for this suite: two units of work, the modules of :data:`BESIDE`
    and the rest, each sent whole to one worker, which runs it in the collection's order
    (the order of :data:`PHASES`). A ``--dist`` of the user's other than xdist's default
    is left to xdist. ``_split_scope`` is xdist's (pinned in setup.py) to override."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TwoStreams(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return "beside" if module in BESIDE else "main"

    return TwoStreams(config, log)


def _is_e2e(item: pytest.Item) -> bool:
    return "e2e" in item.nodeid.split("/")


def phase(item: pytest.Item) -> int:
    """Where ``item`` runs in the session (see :data:`PHASES`)."""
    if not _is_e2e(item):
        return 0
    used = set(getattr(item, "fixturenames", ()))
    for number, fixtures in PHASES:
        if used & fixtures:
            return number
    return STANDALONE_PHASE


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Mark every test under tests/e2e as ``e2e`` (``-m "not e2e"`` is the fast loop), and
    put the tests in the order of :data:`PHASES`. First of the hook's implementations, so
    ``-m`` sees the marks (pytest keeps this order: nothing here is parametrized above
    function scope)."""
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
    # Modules on local Hadoops of equal specs next to each other, the tests that stop one
    # right after the others on it: one start each.
    groups: dict[str, int] = {}
    for item in items:
        if phase(item) >= OWN_CLUSTER_PHASE:
            groups.setdefault(repr(getattr(item.module, "SPEC", None)), len(groups))

    def order(item: pytest.Item) -> tuple[int, int, int]:
        number = phase(item)
        if number < OWN_CLUSTER_PHASE:
            return number, 0, 0
        return OWN_CLUSTER_PHASE, groups[repr(getattr(item.module, "SPEC", None))], number

    items[:] = sorted(items, key=order)


#: Seconds spent per tier (setup, call and teardown of its tests), for the run's summary.
TIER_SECONDS = pytest.StashKey[dict]()


def tier(keywords: Any) -> str:
    """The tier of a test, from its marks: unit, smoke, faults, slow, or the other e2e."""
    if "e2e" not in keywords:
        return "unit"
    return next((name for name in ("smoke", "faults", "slow") if name in keywords), "e2e")


_CONFIG: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TIER_SECONDS] = {}
    _CONFIG[:] = [config]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each report's seconds to its tier; in the process that prints the summary
    (xdist's controller gets every worker's reports here)."""
    seconds = _CONFIG[0].stash[TIER_SECONDS]
    name = tier(report.keywords)
    seconds[name] = seconds.get(name, 0.0) + report.duration


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's controller: keep a worker's summary (once per worker: after Ctrl-C the hook
    comes twice)."""
    lines = getattr(node, "workeroutput", {}).get(WORKER_SUMMARY)
    if lines:
        node.config.stash.setdefault(SUMMARY_LINES, {})[node.gateway.id] = lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """How long each tier took, summed over the workers (``-m`` selects tiers: see PHASES
    above and the README); what each worker's end-to-end tests started and left."""
    seconds = config.stash.get(TIER_SECONDS, {})
    if seconds:
        terminalreporter.write_sep("-", "time per tier (summed over the workers)")
        terminalreporter.write_line(", ".join(
            f"{name} {value:.0f} s" for name, value in sorted(seconds.items())))
    summaries = config.stash.get(SUMMARY_LINES, {})
    lines = [(section, f"{worker}: {text}" if worker else text)
             for worker, pairs in sorted(summaries.items()) for section, text in pairs]
    for section in dict.fromkeys(section for section, _ in lines):
        terminalreporter.write_sep("-", section)
        for line in (text for where, text in lines if where == section):
            terminalreporter.write_line(line)


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


@pytest.fixture(scope="session", autouse=True)
def small_box_drivers():
    """The tests' Spark drivers (this process's and those of the programs the tests start)
    get the JVM options the local Hadoop gives its own JVMs: Spark's launcher adds
    ``SPARK_SUBMIT_OPTS`` to the driver's command line. A driver's CPU, mostly spent
    starting up, halves on a 2-core box (see :data:`SMALL_BOX_JVM`)."""
    from zoo_ray.minicluster.daemons import SMALL_BOX_JVM

    saved = os.environ.get("SPARK_SUBMIT_OPTS")
    if saved is None:
        os.environ["SPARK_SUBMIT_OPTS"] = " ".join(SMALL_BOX_JVM)
    yield
    if saved is None:
        os.environ.pop("SPARK_SUBMIT_OPTS", None)
