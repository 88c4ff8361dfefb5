"""Where a command's CPU goes on this machine, by process kind: for the test suite's budget.

    python benchmarks/suite_cpu.py [--every 2] -- python -m pytest tests

Runs the command and samples every process on the machine every ``--every`` seconds (a
process's CPU time as last seen counts: one that lives less than a sample is missed, one
that ends between two loses at most a sample's worth). Prints the machine's busy share
over the run, CPU seconds per process kind (the kinds of ``isolated_scale.py`` plus the
test workers and the archive tools) and the busy share per minute, with the commit and the
machine. Exits with the command's status.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil

from isolated_scale import KINDS
from provenance import print_provenance

_MORE_KINDS = [("xdist", "pytest workers"), ("pytest", "pytest workers"),
               ("ipykernel", "notebook kernels"), ("jupyter", "notebook kernels"),
               ("gzip", "archive tools"), ("tar ", "archive tools"), ("mvn", "Maven"),
               ("krb5kdc", "KDC"), ("zoo_ray", "zoo_ray processes")]


def _kind(name: str, line: str) -> str:
    if name in ("raylet", "gcs_server"):
        return name
    return next((k for needle, k in KINDS + _MORE_KINDS if needle in line), "other")


def _sample(seen: dict[tuple[int, float], tuple[str, float]]) -> None:
    for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None:
            continue
        key = (info["pid"], info["create_time"])
        kind = seen[key][0] if key in seen else _kind(info["name"] or "",
                                                      " ".join(info["cmdline"] or []))
        seen[key] = (kind, info["cpu_times"].user + info["cpu_times"].system)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    print_provenance()
    before: dict[tuple[int, float], tuple[str, float]] = {}
    _sample(before)
    seen = dict(before)
    started, cpu_start = time.monotonic(), psutil.cpu_times()
    minutes: list[float] = []
    last_cpu, last_at = cpu_start, started
    child = subprocess.Popen(command)
    while child.poll() is None:
        time.sleep(args.every)
        _sample(seen)
        now = time.monotonic()
        if now - last_at >= 60:
            cpu = psutil.cpu_times()
            minutes.append(_busy(last_cpu, cpu))
            last_cpu, last_at = cpu, now
    wall, cpu_end = time.monotonic() - started, psutil.cpu_times()
    spent: dict[str, float] = {}
    for key, (kind, seconds) in seen.items():
        spent[kind] = spent.get(kind, 0.0) + seconds - before.get(key, (kind, 0.0))[1]
    total = sum(spent.values())
    print(f"wall {wall:.0f} s, machine busy {_busy(cpu_start, cpu_end):.0%} of "
          f"{psutil.cpu_count()} cores, {total:.0f} CPU-s seen in processes")
    for kind, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        if seconds >= 1:
            print(f"{kind:22s} {seconds:8.0f} CPU-s  {seconds / total:6.1%}")
    print("busy per minute: " + " ".join(f"{share:.0%}" for share in minutes))
    return child.returncode


def _busy(before: psutil._common.scputimes, after: psutil._common.scputimes) -> float:
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    total = sum(after) - sum(before)
    return 1 - idle / total if total else 0.0


if __name__ == "__main__":
    sys.exit(main())
