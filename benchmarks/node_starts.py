"""Many Ray nodes starting at once on one host: with start slots and without.

    python benchmarks/node_starts.py [--nodes 8] [--rounds 2]

Starts a head through a RayManager (as an executor's task would), then ``--nodes``
worker nodes at once, each through its own RayManager (``python -m zoo_ray.manager``),
as several applications' executors starting together on one small host do; waits for
every answer, then stops them all. Once with start slots (:mod:`zoo_ray.start_slots`,
as many as the host's CPUs) and once without (a slots directory others may write,
which the managers refuse to use), ``--rounds`` times each, taking turns. Prints, per
run, the time until every node answered, the nodes that failed, the failed tries, and
how long the raylets waited for their dashboard agents (Ray 2.60's raylet aborts after
15 s). No Hadoop: the nodes are the managers' own, on loopback.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from provenance import print_provenance
from zoo_ray.protocol import NodeInfo, NodeSpec
from zoo_ray.start_slots import SLOTS_DIR_ENV, slot_count

_AGENT_STARTED = re.compile(r"^\[(\S+ \S+) I .*Monitor agent process with name dashboard_agent")
_AGENT_UP = re.compile(r"^(\S+ \S+)\s+INFO http_server_agent\.py:\d+ -- Dashboard agent http")


def _manager(spec: NodeSpec, slots: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "zoo_ray.manager"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, SLOTS_DIR_ENV: str(slots)},
                            start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(spec.to_json() + "\n")
    proc.stdin.close()
    return proc


def _answer(proc: subprocess.Popen[str]) -> tuple[str, str]:
    assert proc.stdout is not None
    kind, _, payload = proc.stdout.readline().partition(" ")
    return kind, payload


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stamp(text: str) -> datetime:
    return datetime.strptime(text.replace(",", "."), "%Y-%m-%d %H:%M:%S.%f")


def _agent_waits(work: Path) -> list[float]:
    """Seconds from each raylet starting its dashboard agent to the agent's port."""
    waits = []
    for session in work.glob("*/.zoo_ray/ray/session_2*"):
        started = [_stamp(m[1]) for line in _lines(session / "logs" / "raylet.out")
                   if (m := _AGENT_STARTED.match(line))]
        up = [_stamp(m[1]) for line in _lines(session / "logs" / "dashboard_agent.log")
              if (m := _AGENT_UP.match(line))]
        if started and up:
            waits.append((up[0] - started[0]).total_seconds())
    return waits


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def run(nodes: int, with_slots: bool) -> dict[str, float]:
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="zoo-ray-starts-") as tmp:
        work = Path(tmp)
        slots = work / "slots"
        if not with_slots:
            slots.mkdir(mode=0o777)
            slots.chmod(0o777)  # the managers refuse it: no slots

        def spec(name: str, role: str, head: str | None = None) -> NodeSpec:
            return NodeSpec(role=role, app_id="application_bench", token=token, num_cpus=1,
                            work_dir=str(work / name), log_dir=str(work / name / "logs"),
                            object_store_memory=80 << 20, head_address=head,
                            node_ip="127.0.0.1", watch_pid=os.getpid(), ready_timeout=180)

        procs = [_manager(spec("head", "head"), slots)]
        try:
            kind, payload = _answer(procs[0])
            if kind != "READY":
                raise SystemExit(f"the head did not start: {payload}")
            address = NodeInfo.from_json(payload).address
            started = time.monotonic()
            workers = [_manager(spec(f"worker{i}", "worker", address), slots)
                       for i in range(nodes)]
            procs += workers
            answers = [_answer(proc)[0] for proc in workers]
            seconds = time.monotonic() - started
        finally:
            _stop(procs)
        logs = " ".join(p.read_text() for p in work.glob("*/logs/ray_manager.log"))
        waits = _agent_waits(work)
    return {"seconds": seconds, "failed nodes": sum(a != "READY" for a in answers),
            "failed tries": logs.count("failed (") + logs.count("node failed to start"),
            "agent wait median": statistics.median(waits) if waits else float("nan"),
            "agent wait max": max(waits) if waits else float("nan"),
            "agents over 15 s": sum(w > 15 for w in waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print_provenance()
    print(f"{args.nodes} worker nodes at once beside a head; {slot_count()} start slots")
    for number in range(args.rounds):
        for with_slots in (number % 2 == 0, number % 2 == 1):
            figures = run(args.nodes, with_slots)
            shown = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in figures.items())
            print(f"{'slots   ' if with_slots else 'no slots'}: {shown}", flush=True)


if __name__ == "__main__":
    main()
