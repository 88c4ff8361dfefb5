"""The ``zoo-ray`` command line (runs on the gateway)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import ZooRayError
from .minicluster import MiniCluster, MiniClusterSpec

__all__ = ["main"]


def _cluster(args: argparse.Namespace, spec: MiniClusterSpec | None = None) -> MiniCluster:
    return MiniCluster(args.dir, spec=spec)


def _minicluster_up(args: argparse.Namespace) -> int:
    spec = MiniClusterSpec(
        nodemanagers=args.nodemanagers,
        nm_memory_mb=args.nm_memory_mb,
        nm_vcores=args.nm_vcores,
        base_port=args.base_port,
        isolated_hosts=args.isolated_hosts,
    )
    cluster = _cluster(args, spec).up(timeout=args.timeout)
    print(f"HADOOP_CONF_DIR={cluster.hadoop_conf_dir}")
    return 0


def _minicluster_status(args: argparse.Namespace) -> int:
    report = _cluster(args).status()
    print(json.dumps(report, indent=2))
    return 0 if report["running"] else 1


def _minicluster_down(args: argparse.Namespace) -> int:
    _cluster(args).down()
    return 0


def _logs(args: argparse.Namespace) -> int:
    sys.stdout.write(_cluster(args).app_logs(args.application_id))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print(json.dumps(run_demo(args.dir, keep_cluster=args.keep_cluster), indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo-ray", description="Run Ray inside Spark on YARN.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    dir_help = "directory of the local Hadoop (default: ~/.cache/zoo_ray/minicluster)"

    mini = sub.add_parser("minicluster", help="a local Hadoop (HDFS + YARN) on this machine")
    mini_sub = mini.add_subparsers(dest="action", required=True)
    up = mini_sub.add_parser("up", help="start it (or reuse the running one)")
    up.add_argument("--dir", help=dir_help)
    defaults = MiniClusterSpec()
    up.add_argument("--nodemanagers", type=int, default=defaults.nodemanagers)
    up.add_argument("--nm-memory-mb", type=int, default=defaults.nm_memory_mb,
                    help="memory each NodeManager offers (may exceed RAM)")
    up.add_argument("--nm-vcores", type=int, default=defaults.nm_vcores,
                    help="vcores each NodeManager offers (may exceed cores)")
    up.add_argument("--base-port", type=int, default=None,
                    help="first of a block of ports (default: free ports chosen by the kernel)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--isolated-hosts", action="store_true",
                    help="give every NodeManager its own network namespace, address "
                         "(198.18.0.0/15) and hostname; needs root")
    up.set_defaults(func=_minicluster_up)
    status = mini_sub.add_parser("status", help="print what runs (exit 1 if not running)")
    status.add_argument("--dir", help=dir_help)
    status.set_defaults(func=_minicluster_status)
    down = mini_sub.add_parser("down", help="stop every daemon and container it started")
    down.add_argument("--dir", help=dir_help)
    down.set_defaults(func=_minicluster_down)

    logs = sub.add_parser("logs", help="aggregated container logs of a YARN application")
    logs.add_argument("application_id")
    logs.add_argument("--dir", help=dir_help)
    logs.set_defaults(func=_logs)

    demo = sub.add_parser(
        "demo", help="start the local Hadoop, run a small job on YARN through zoo_ray, stop"
    )
    demo.add_argument("--dir", help=dir_help)
    demo.add_argument("--keep-cluster", action="store_true",
                      help="leave the local Hadoop running afterwards")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo-ray`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except ZooRayError as exc:
        print(f"zoo-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
