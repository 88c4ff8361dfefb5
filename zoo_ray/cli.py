"""The ``zoo-ray`` command line (runs on the gateway)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from .errors import InvalidArgumentError, ZooRayError
from .minicluster import MiniCluster, MiniClusterSpec
from .submit import INTERRUPTED

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
        preemption=args.preemption,
        kerberos=args.kerberos,
        token_renew_interval_s=args.token_renew_interval,
        token_max_lifetime_s=args.token_max_lifetime,
        gpus=args.gpus,
    )
    cluster = _cluster(args, spec).up(timeout=args.timeout)
    print(f"HADOOP_CONF_DIR={cluster.hadoop_conf_dir}")
    security = cluster.security
    if security:
        print(f"KRB5_CONFIG={security.realm.krb5_conf}")
        print(f"# log in as {security.user}: {security.kinit_command()}")
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


def _conf_pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--conf {value!r} is not KEY=VALUE; write it like "
                                       "--conf spark.executor.heartbeatInterval=20s.")
        pairs[key] = setting
    return pairs


def _submit(args: argparse.Namespace) -> int:
    from .submit import SubmitOptions, submit

    options = SubmitOptions(
        hadoop_conf=args.hadoop_conf, num_executors=args.num_executors,
        executor_cores=args.executor_cores, executor_memory=args.executor_memory,
        driver_memory=args.driver_memory,
        extra_executor_memory_for_ray=args.extra_executor_memory_for_ray,
        object_store_memory=args.object_store_memory, conda_name=args.conda_name,
        env_prefix=args.env_prefix, penv_archive=args.archive, queue=args.queue,
        extra_python_lib=[p for value in args.py_files for p in value.split(",") if p],
        conf=_conf_pairs(args.conf), principal=args.principal, keytab=args.keytab,
        executor_gpus=args.executor_gpus, min_ray_nodes=args.min_ray_nodes,
        max_ray_nodes=args.max_ray_nodes, idle_timeout=args.idle_timeout,
    )
    return submit(args.script, args.args, options)


def _pack(args: argparse.Namespace) -> int:
    from .shipping import ship_environment

    entry = ship_environment(args.hadoop_conf, args.conda_name, args.env_prefix, args.cache_dir,
                             args.principal, args.keytab)
    print(json.dumps(entry, indent=2))
    return 0


def _rm(args: argparse.Namespace) -> Any:
    from .hadoop_conf import HadoopConf, hadoop_conf_dir
    from .yarn import ResourceManager

    return ResourceManager.from_conf(HadoopConf(hadoop_conf_dir(args.hadoop_conf)))


def _status(args: argparse.Namespace) -> int:
    from .applications import application_report, check_app_id, list_applications

    app_id = check_app_id(args.application_id) if args.application_id else None
    rm = _rm(args)
    apps = [rm.app(app_id)] if app_id else list_applications(rm, all_states=args.all)
    print(json.dumps([application_report(rm, app) for app in apps], indent=2))
    return 0


def _stop(args: argparse.Namespace) -> int:
    from .applications import check_app_id, stop_application

    app_id = check_app_id(args.application_id)  # before anything reads the configuration
    state = stop_application(_rm(args), app_id)
    print(f"{args.application_id}: {state}")
    return 0


def _add_env_options(parser: argparse.ArgumentParser, archive: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--conda-name", help="conda environment (name or prefix) to ship")
    group.add_argument("--env-prefix", help="conda env or virtualenv/venv prefix to ship")
    if archive:
        group.add_argument("--archive", help="a prebuilt conda-pack/venv-pack archive "
                                             "(local path or hdfs:// URI)")


def _add_hadoop_conf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hadoop-conf", help="Hadoop client configuration directory "
                                              "(default: $HADOOP_CONF_DIR)")


def _add_login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--principal", help="Kerberos principal to log in as, with --keytab "
                                            "(default: the ticket cache kinit wrote)")
    parser.add_argument("--keytab", help="the keytab of --principal (stays on this machine)")


def _add_submit(sub: Any) -> None:
    submit = sub.add_parser(
        "submit", help="run an unchanged Ray script on YARN",
        **_examples("zoo-ray submit train.py --epochs 3",
                    "zoo-ray submit --num-executors 4 --executor-cores 4 --executor-memory 4g "
                    "--extra-executor-memory-for-ray 6g --object-store-memory 4g "
                    "--queue batch train.py",
                    "zoo-ray submit --conda-name zoo --py-files utils.py,model.zip job.py",
                    "",
                    "The script runs unchanged: its own ray.init() joins the cluster on YARN.",
                    "The exit code is the script's; Ctrl-C stops the application and every "
                    "Ray process."),
        description="Start Spark executors on YARN with a Ray node in each, run SCRIPT "
                    "against that cluster, then stop everything.")
    _add_hadoop_conf(submit)
    submit.add_argument("--num-executors", type=int, default=2)
    submit.add_argument("--executor-cores", type=int, default=2)
    submit.add_argument("--executor-memory", default="2g", help="JVM heap of each executor")
    submit.add_argument("--driver-memory", default="1g")
    submit.add_argument("--extra-executor-memory-for-ray", default=None,
                        help="memory each container adds for Ray (object store and workers)")
    submit.add_argument("--object-store-memory", default=None,
                        help="object store of each executor's Ray node")
    submit.add_argument("--executor-gpus", type=int, default=0, metavar="N",
                        help="GPUs (yarn.io/gpu) per executor, all for its Ray node")
    submit.add_argument("--min-ray-nodes", type=int, default=None, metavar="N",
                        help="an elastic cluster: start N nodes (default 1 with "
                             "--max-ray-nodes), grow with Ray's demand")
    submit.add_argument("--max-ray-nodes", type=int, default=None, metavar="N",
                        help="an elastic cluster: at most N executors' nodes")
    submit.add_argument("--idle-timeout", default="60s",
                        help="an elastic cluster gives back a node idle this long (60s)")
    _add_env_options(submit, archive=True)
    submit.add_argument("--queue", help="YARN queue")
    _add_login(submit)
    submit.add_argument("--py-files", action="append", default=[],
                        help="comma-separated .py/.zip/.egg files for the executors")
    submit.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark property (repeatable; visible in the process list, so "
                             "never a secret)")
    submit.add_argument("script", help="the Python script to run")
    submit.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    submit.set_defaults(func=_submit)


def _add_applications(sub: Any) -> None:
    pack = sub.add_parser(
        "pack", help="pack an environment and upload it to the cluster's cache",
        **_examples("zoo-ray pack                  # the environment running zoo-ray",
                    "zoo-ray pack --conda-name zoo",
                    "zoo-ray pack --env-prefix /opt/envs/ml --hadoop-conf /etc/hadoop/conf"),
        description="Pack the environment (or reuse its pack) and upload it unless the "
                    "cluster has it; print the cache entry.")
    _add_hadoop_conf(pack)
    _add_env_options(pack, archive=False)
    pack.add_argument("--cache-dir", help="cache directory on the cluster "
                                          "(default: /user/<you>/.zoo_ray/cache)")
    _add_login(pack)
    pack.set_defaults(func=_pack)

    status = sub.add_parser(
        "status", help="zoo_ray's applications on YARN and their Ray nodes",
        **_examples("zoo-ray status                # applications that have not ended",
                    "zoo-ray status --all", "zoo-ray status application_1700000000000_0042"),
        description="Print zoo_ray's applications (JSON): YARN's state and containers, and "
                    "the Ray nodes of a RayContext running on this gateway.")
    _add_hadoop_conf(status)
    status.add_argument("application_id", nargs="?")
    status.add_argument("--all", action="store_true", help="include ended applications")
    status.set_defaults(func=_status)

    stop = sub.add_parser(
        "stop", help="kill a zoo_ray application and everything in it",
        **_examples("zoo-ray stop application_1700000000000_0042"),
        description="Kill the application on YARN (its executors and their Ray nodes) and "
                    "the Ray node on this gateway its driver attached to.")
    _add_hadoop_conf(stop)
    stop.add_argument("application_id")
    stop.set_defaults(func=_stop)


_DIR_HELP = "directory of the local Hadoop (default: ~/.cache/zoo_ray/minicluster)"


def _examples(*lines: str) -> dict[str, Any]:
    """``add_parser`` keywords that show ``lines`` as examples after the options."""
    return {"epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def _add_minicluster(sub: Any) -> None:
    mini = sub.add_parser("minicluster", help="a local Hadoop (HDFS + YARN) on this machine",
                          **_examples("zoo-ray minicluster up", "zoo-ray minicluster status",
                                      "zoo-ray minicluster down"))
    mini_sub = mini.add_subparsers(dest="action", required=True)
    up = mini_sub.add_parser("up", help="start it (or reuse the running one)",
                             **_examples("zoo-ray minicluster up",
                                         "zoo-ray minicluster up --nodemanagers 3 "
                                         "--isolated-hosts",
                                         "zoo-ray minicluster up --kerberos"))
    up.add_argument("--dir", help=_DIR_HELP)
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
    up.add_argument("--preemption", action="store_true",
                    help="let YARN preempt containers of a queue over its capacity for "
                         "another queue's requests (capacity-scheduler.xml's queues)")
    up.add_argument("--kerberos", action="store_true",
                    help="secure it: a KDC of its own, Kerberos on every RPC, SPNEGO on every "
                         "web endpoint (needs MIT Kerberos: krb5-kdc krb5-admin-server "
                         "krb5-user)")
    up.add_argument("--token-renew-interval", type=int, default=None, metavar="SECONDS",
                    help="with --kerberos: how long delegation tokens last before they must "
                         "be renewed (default: Hadoop's, one day)")
    up.add_argument("--token-max-lifetime", type=int, default=None, metavar="SECONDS",
                    help="with --kerberos: how long delegation tokens can be renewed for "
                         "(default: Hadoop's, seven days)")
    up.add_argument("--gpus", type=int, default=0, metavar="N",
                    help="N pretend GPUs per NodeManager, scheduled by YARN's GPU plugin "
                         "(yarn.io/gpu) as real ones are")
    up.set_defaults(func=_minicluster_up)
    status = mini_sub.add_parser("status", help="print what runs (exit 1 if not running)",
                                 **_examples("zoo-ray minicluster status"))
    status.add_argument("--dir", help=_DIR_HELP)
    status.set_defaults(func=_minicluster_status)
    down = mini_sub.add_parser("down", help="stop every daemon and container it started",
                               **_examples("zoo-ray minicluster down"))
    down.add_argument("--dir", help=_DIR_HELP)
    down.set_defaults(func=_minicluster_down)


def _add_logs_and_demo(sub: Any) -> None:
    logs = sub.add_parser("logs", help="aggregated container logs of a YARN application",
                          **_examples("zoo-ray logs application_1700000000000_0042"))
    logs.add_argument("application_id")
    logs.add_argument("--dir", help=_DIR_HELP)
    logs.set_defaults(func=_logs)

    demo = sub.add_parser(
        "demo", help="start the local Hadoop, run a small job on YARN through zoo_ray, stop",
        **_examples("zoo-ray demo", "zoo-ray demo --keep-cluster"))
    demo.add_argument("--dir", help=_DIR_HELP)
    demo.add_argument("--keep-cluster", action="store_true",
                      help="leave the local Hadoop running afterwards")
    demo.set_defaults(func=_demo)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo-ray", description="Run Ray inside Spark on YARN.",
        **_examples("zoo-ray demo", "zoo-ray submit train.py --epochs 3", "zoo-ray status",
                    "zoo-ray stop application_1700000000000_0042"))
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_submit(sub)
    _add_applications(sub)
    _add_minicluster(sub)
    _add_logs_and_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo-ray`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ZooRayError as exc:
        print(f"zoo-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo-ray: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
