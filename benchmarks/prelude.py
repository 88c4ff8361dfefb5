"""A user's prelude, timed in a Python of its own (imported by the prelude benchmarks).

``init_spark_on_yarn`` plus ``RayContext.init()``, timed apart, then both stopped: what a
user's program pays before its first line of Ray.
"""
from __future__ import annotations

import json
import subprocess
import sys

_PROGRAM = """
import json, sys, time
started = time.monotonic()
from zoo_ray import RayContext, init_spark_on_yarn
sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=int(sys.argv[3]),
                        executor_cores=1, executor_memory="512m", driver_memory="512m",
                        extra_executor_memory_for_ray="1g", executor_timeout=900,
                        conf=json.loads(sys.argv[2]), env_prefix=sys.argv[4] or None)
spark_s = time.monotonic() - started
ray_ctx = RayContext(sc=sc, object_store_memory="128m")
ray_ctx.init()
print(json.dumps({"init_spark_on_yarn_s": spark_s,
                  "ray_context_init_s": time.monotonic() - started - spark_s}), flush=True)
ray_ctx.stop()
sc.stop()
"""


def run_prelude(hadoop_conf: str, env: dict[str, str], conf: dict[str, str] | None = None,
                executors: int = 1, env_prefix: str = "") -> dict[str, float]:
    """Run the prelude with Spark properties ``conf``, ``executors`` executors and the
    environment at ``env_prefix`` (default: this one); its two times in seconds."""
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, hadoop_conf, json.dumps(conf or {}), str(executors),
         env_prefix],
        capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"the program failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])
