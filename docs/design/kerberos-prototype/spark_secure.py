"""PySpark 4.3 (client mode, master yarn) on the secure prototype. Run with /work/main/.venv/bin/python
while holding /work/e2e.lock.   python spark_secure.py RUN_DIR ccache|keytab [renewal]

ccache : the user kinit'd (password on stdin); the driver JVM logs in from the ticket cache.
keytab : no ticket cache at all; spark.kerberos.principal/keytab (driver logs in from the keytab).
"""
import glob, os, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, HERE)
from secure_hadoop import Cluster, USER, REALM
import pyspark
root, mode = sys.argv[1], sys.argv[2]
c = Cluster(root)
krb5 = c.kdc.krb5_conf
os.environ.update(HADOOP_CONF_DIR=str(c.root / "conf"), KRB5_CONFIG=str(krb5),
                  PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
os.environ.pop("HADOOP_USER_NAME", None)
# Loopback only: without this Spark binds the driver to eth0 (it warned "using 192.0.2.2 instead").
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
cc = c.root / f"ccache-spark-{mode}"
if cc.exists(): cc.unlink()
os.environ["KRB5CCNAME"] = f"FILE:{cc}"
jvm_krb = f"-Djava.security.krb5.conf={krb5}"
jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
from pyspark.sql import SparkSession
b = (SparkSession.builder.master("yarn").appName(f"krb-proto-{mode}")
     .config("spark.driver.extraJavaOptions", jvm_krb)
     .config("spark.yarn.am.extraJavaOptions", jvm_krb)
     .config("spark.executor.extraJavaOptions", jvm_krb)
     # Same host: the NodeManager can read PySpark's jars in place, nothing is uploaded.
     .config("spark.yarn.jars", f"local:{jars}/*")
     .config("spark.executor.instances", "1").config("spark.executor.memory", "512m")
     .config("spark.executor.cores", "1").config("spark.yarn.am.memory", "512m")
     .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
     # ... and the AM and executors too (else they pick eth0: "using 192.0.2.2 instead").
     .config("spark.yarn.appMasterEnv.SPARK_LOCAL_IP", "127.0.0.1")
     .config("spark.executorEnv.SPARK_LOCAL_IP", "127.0.0.1"))
if mode == "ccache":
    pw = (c.root / "secrets" / f"{USER}.password").read_text()
    c.kdc.kinit_password(USER, pw, cc)
    if "renewal" in sys.argv:
        b = b.config("spark.kerberos.renewal.credentials", "ccache")
else:
    b = (b.config("spark.kerberos.principal", f"{USER}@{REALM}")
          .config("spark.kerberos.keytab", str(c.kdc.root / "keytabs" / f"{USER}.keytab")))
t = time.monotonic()
spark = b.getOrCreate(); sc = spark.sparkContext
print(f"SparkContext up in {time.monotonic()-t:.1f}s: {sc.applicationId}")
jvm = sc._jvm
UGI = jvm.org.apache.hadoop.security.UserGroupInformation
u = UGI.getCurrentUser()
print("UGI:", u.toString(), "| security enabled:", UGI.isSecurityEnabled(), "| from keytab:", u.isFromKeytab(),
      "| has kerberos creds:", u.hasKerberosCredentials(), "| tokens:", [str(tk.getKind()) for tk in u.getCredentials().getAllTokens().toArray()])
print("sum of squares:", sc.parallelize(range(1000), 4).map(lambda x: x * x).sum())
out = f"hdfs:///user/{USER}/krb-proto-{mode}"
spark.range(0, 10000).selectExpr("id", "id % 7 as k").write.mode("overwrite").parquet(out)
print("parquet round trip:", spark.read.parquet(out).groupBy("k").count().orderBy("k").collect()[:3])
def where(_):
    import os, socket
    return [(os.environ.get("CONTAINER_ID"), os.environ.get("HADOOP_TOKEN_FILE_LOCATION"), os.getuid(),
             "KRB5CCNAME" in os.environ)]
print("executor sees:", sc.parallelize([0], 1).mapPartitions(where).collect())
app = sc.applicationId
spark.stop()
print("stopped", app)
