#!/bin/bash
# The whole prototype, end to end. Daemons run, so on the shared machine:
#   flock /work/e2e.lock bash /work/krb-proto/run_all.sh
# Uses /work/main/.venv for PySpark (read-only) and venv-nogss (pyspnego only, no gssapi) for the
# SPNEGO clients: the ctypes client needs no pip package.
set -u
cd "$(dirname "$0")"
DIR=${1:-run/secure}
PY=venv-nogss/bin/python
SPARK_PY=/work/main/.venv/bin/python
trap '$PY secure_hadoop.py down "$DIR"' EXIT
$PY secure_hadoop.py down "$DIR" 2>/dev/null; rm -rf "$DIR"
echo "== up";            /usr/bin/time -f "up: %e s" $PY secure_hadoop.py up "$DIR" || exit 1
echo "== HDFS + REST";   $PY prove_secure.py "$DIR" 2>&1 | grep -avE "NativeCodeLoader|^\s+at " | cut -c1-220
echo "== Spark, ticket cache"; $SPARK_PY spark_secure.py "$DIR" ccache 2>&1 | grep -aE "SparkContext up|UGI:|sum of|parquet|executor sees|stopped|Error" | sed 's/.*\(SparkContext\|UGI\|sum of\|parquet\|executor sees\|stopped\)/\1/' | cut -c1-220
echo "== Spark, keytab";  $SPARK_PY spark_secure.py "$DIR" keytab 2>&1 | grep -aE "SparkContext up|UGI:|sum of|parquet|stopped|Error" | sed 's/.*\(SparkContext\|UGI\|sum of\|parquet\|stopped\)/\1/' | cut -c1-220
echo "== REST writes + ACLs"; timeout 400 $SPARK_PY kill_test.py "$DIR" 2>&1 | cut -c1-220
echo "== yarn logs (aggregated, as the user)"; $PY - "$DIR" <<'PYEOF'
import sys, subprocess; sys.path.insert(0, '.')
from secure_hadoop import Cluster, java_argv, USER
c = Cluster(sys.argv[1]); cc = c.root / f"ccache-{USER}"
apps = sorted(l.split()[0] for l in subprocess.run(
    java_argv(c.root / "conf", "org.apache.hadoop.yarn.client.cli.ApplicationCLI", 256, c.kdc.krb5_conf,
              args=["application", "-list", "-appStates", "ALL"]),
    env=c.env(cc), capture_output=True, text=True).stdout.splitlines() if l.startswith("application_"))
print("apps:", apps)
r = subprocess.run(java_argv(c.root / "conf", "org.apache.hadoop.yarn.client.cli.LogsCLI", 256, c.kdc.krb5_conf,
                             args=["-applicationId", apps[0], "-log_files", "stderr"]),
                   env=c.env(cc), capture_output=True, text=True)
print("yarn logs", apps[0], "exit", r.returncode, len(r.stdout), "chars;", r.stdout.count("LogType:stderr"), "stderr logs")
PYEOF
