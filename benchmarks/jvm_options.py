"""What the local Hadoop's JVM options save: one Spark job's JVM CPU with and without them.

    python benchmarks/jvm_options.py [--rounds 3]

Runs the same small Spark job (local[2]: a 3-million-row aggregation and a Python RDD
job, the shape of the suite's short-lived JVMs) in a fresh driver process, alternately
with the JVM's defaults and with :data:`zoo_ray.minicluster.daemons.SMALL_BOX_JVM`
(through ``SPARK_SUBMIT_OPTS``, as the test suite passes them), and prints the JVM's CPU
seconds (user + system, from /proc before it stops) and the wall time of each run, their
medians and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

from zoo_ray.minicluster.daemons import SMALL_BOX_JVM

_JOB = textwrap.dedent("""
    import json, os, time
    from pyspark.sql import SparkSession
    started = time.monotonic()
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    spark.range(3_000_000).selectExpr("sum(id)").collect()
    spark.sparkContext.parallelize(range(1000), 4).map(lambda x: x * 2).sum()
    pid = spark.sparkContext._gateway.proc.pid
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    print(json.dumps({"jvm_cpu_s": cpu, "wall_s": time.monotonic() - started}))
    spark.stop()
""")


def _run(options: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "SPARK_SUBMIT_OPTS"}
    if options:
        env["SPARK_SUBMIT_OPTS"] = options
    out = subprocess.run([sys.executable, "-c", _JOB], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    small = " ".join(SMALL_BOX_JVM)
    runs: dict[str, list[dict[str, float]]] = {"defaults": [], small: []}
    for round_number in range(args.rounds):
        for name in (("defaults", small) if round_number % 2 == 0 else (small, "defaults")):
            result = _run(None if name == "defaults" else name)
            runs[name].append(result)
            print(f"{name:45s} JVM {result['jvm_cpu_s']:5.2f} CPU s, {result['wall_s']:5.1f} s")
    medians = {name: {key: statistics.median(r[key] for r in results)
                      for key in ("jvm_cpu_s", "wall_s")} for name, results in runs.items()}
    for name, median in medians.items():
        print(f"median {name:38s} JVM {median['jvm_cpu_s']:5.2f} CPU s, "
              f"{median['wall_s']:5.1f} s")
    ratio = {key: medians[small][key] / medians["defaults"][key] for key in ("jvm_cpu_s", "wall_s")}
    print(f"with / without: JVM CPU {ratio['jvm_cpu_s']:.2f}, wall {ratio['wall_s']:.2f}")


if __name__ == "__main__":
    main()
