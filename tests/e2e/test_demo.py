"""The README's first command: `zoo-ray demo` on the local Hadoop."""
from __future__ import annotations

import json
import subprocess
import sys


def test_zoo_ray_demo_runs_spark_and_ray_on_yarn_and_leaves_a_running_cluster_running(cluster):
    result = subprocess.run([sys.executable, "-m", "zoo_ray.cli", "demo", "--dir",
                             str(cluster.dir)], capture_output=True, text=True, timeout=900)
    errors = [line for line in result.stderr.splitlines() if "Error" in line or "Exception" in line]
    assert result.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["word_counts"] == {"ray": 1000, "runs": 2000, "inside": 1000, "spark": 2000,
                                     "on": 2000, "yarn": 2000, "and": 1000}
    assert report["letters"] == report["word_copies"] * sum(
        len(w) * n for w, n in report["word_counts"].items())
    holders = report["blocks_by_executor"]
    assert sum(holders.values()) >= 2 and "" not in holders
    assert set(holders) <= set(report["ray_nodes_in_executors"])
    assert abs(report["pi"] - 3.1416) < 0.05
    assert len(set(report["ray_nodes_in_executors"])) == 2
    assert report["yarn_state"] == "FINISHED"
    # Every executor's RayManager log and Ray's own logs reached YARN log aggregation.
    logs = cluster.app_logs(report["application_id"])
    files = [line.split(":", 1)[1] for line in logs.splitlines() if line.startswith("LogType:")]
    for name in ("ray_manager.log", "ray_start.log", "ray-raylet.out"):
        assert files.count(name) == 2, name
    assert files.count("ray-gcs_server.out") == 1
    assert cluster.running  # it reused the session's cluster, so it left it up
