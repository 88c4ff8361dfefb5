"""The secure local Hadoop (``MiniClusterSpec(kerberos=True)``): a KDC of its own, Kerberos on
every RPC, SPNEGO on every web endpoint; and zoo_ray's REST client on it, as a user logs in."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest
from tests.e2e.helpers import (
    NOTEBOOK_DIR,
    SECURE_SPEC,
    all_gone,
    end_program,
    keytab_login,
    notebook_problems,
    program_env,
    ray_pids,
    run_notebook,
    start_driver,
    submit_in_background,
    wait_app_end,
    zoo_ray_cli,
)
from tests.e2e.java_probe import AM_TOKEN_PROBE, run_probe
from tests.kerberos import kinit, needs_krb5

from zoo_ray import init_spark_on_yarn, spark_internals
from zoo_ray.errors import GpuRequestError, KerberosError
from zoo_ray.host import port_free
from zoo_ray.minicluster import MiniCluster
from zoo_ray.minicluster.daemons import daemon_env, java_argv
from zoo_ray.spnego import hadoop_opener
from zoo_ray.yarn import ResourceManager

pytestmark = needs_krb5

#: Shared with test_yarn_takes_executors, which runs on it after this module.
SPEC = SECURE_SPEC


@pytest.fixture(scope="module")
def cluster(own_cluster: MiniCluster) -> MiniCluster:
    """Replaces the session's cluster for every test in this module."""
    return own_cluster


@pytest.fixture
def user_env(cluster, monkeypatch, tmp_path):
    """This process as a user on the gateway: the realm's KRB5_CONFIG, an empty ticket cache
    of its own (``kinit`` fills it), zoo_ray's openers made afresh."""
    security = cluster.security
    monkeypatch.setenv("KRB5_CONFIG", str(security.realm.krb5_conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'krb5cc'}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME", raising=False)
    hadoop_opener.cache_clear()
    yield tmp_path / "krb5cc"
    hadoop_opener.cache_clear()


def _user_kinit(cluster: MiniCluster, ccache: Path) -> None:
    security = cluster.security
    password = Path(security.password_file).read_text()
    result = kinit(security.realm, ccache, security.user, password=password)
    assert result.returncode == 0, result.stderr


def _fs_as(cluster: MiniCluster, ccache: Path, *args: str) -> subprocess.CompletedProcess:
    """``hadoop fs`` as the holder of ``ccache``, as a user's shell would run it."""
    state = json.loads((cluster.dir / "state.json").read_text())
    security = cluster.security
    argv = java_argv(Path(state["java_home"]), cluster.hadoop_conf_dir, Path(state["jars"]),
                     "org.apache.hadoop.fs.FsShell", 256, args=list(args),
                     options=security.java_options)
    env = security.realm.env(daemon_env(Path(state["java_home"]), cluster.hadoop_conf_dir))
    env["KRB5CCNAME"] = f"FILE:{ccache}"
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_the_resource_manager_gives_a_kerberos_client_no_token_for_an_am_in_the_driver(
        cluster, tmp_path):
    # Why the ApplicationMaster stays in a container on Kerberos (zoo_ray.app_master): the
    # report of an application whose AM runs in its client carries no AMRMToken for the
    # application's own submitter, authenticated with Kerberos. The ResourceManager compares
    # the caller's full principal with the application's short user
    # (docs/design/am-localization.md); test_app_master_token shows the token without Kerberos.
    report = run_probe(cluster, AM_TOKEN_PROBE, tmp_path / "krb5cc")
    print(f"probe: {report}")
    assert report["attempt"] == "LAUNCHED", report
    assert report["user"] == psutil.Process().username()
    assert report["caller"] == cluster.security.user != report["user"]
    assert report["token"] is False, report
    wait_app_end(cluster, report["app"])


def test_status_names_the_realm_and_the_kinit_and_secrets_are_private(cluster):
    report = cluster.status()
    kerberos = report["kerberos"]
    security = cluster.security
    assert kerberos["realm"] == "ZOO.LOCAL"
    assert kerberos["user"] == f"{psutil.Process().username()}@ZOO.LOCAL"
    assert Path(kerberos["krb5_config"]).is_file()
    assert kerberos["kinit"].startswith(f"KRB5_CONFIG={kerberos['krb5_config']} kinit ")
    assert "krb5kdc" in report["daemons"]
    private = [security.user_keytab, security.password_file, security.http_secret,
               *security.keytabs.values(), cluster.dir / "server-conf" / "ssl-server.xml"]
    assert {str(p): stat.S_IMODE(os.stat(p).st_mode) for p in private} == {
        str(p): 0o600 for p in private}
    # The keystores' passwords stay out of the directory users hand to Spark.
    assert not (cluster.hadoop_conf_dir / "ssl-server.xml").exists()
    ssl_server = ElementTree.parse(cluster.dir / "server-conf" / "ssl-server.xml").getroot()
    secrets = [Path(security.password_file).read_text().strip(),
               *{p.findtext("value") for p in ssl_server.iter("property")
                 if "password" in p.findtext("name")}]
    assert len(secrets) == 3 and not [s for s in secrets if s in json.dumps(report)]


def test_hdfs_wants_a_ticket_and_takes_the_user_s(cluster, user_env):
    refused = _fs_as(cluster, user_env, "-ls", "/")
    assert refused.returncode != 0
    assert "Client cannot authenticate via:[TOKEN, KERBEROS]" in refused.stderr
    _user_kinit(cluster, user_env)
    home = f"/user/{psutil.Process().username()}"  # made by `up`, as a cluster's admins do
    made = _fs_as(cluster, user_env, "-mkdir", "-p", f"{home}/secure-check")
    assert made.returncode == 0, made.stderr
    listed = _fs_as(cluster, user_env, "-ls", home)
    assert "secure-check" in listed.stdout, listed.stderr


def test_every_web_endpoint_wants_spnego_and_zoo_ray_s_client_answers(cluster, user_env):
    rm_url = f"http://{cluster.resource_manager.webapp_address}/ws/v1/cluster/info"
    with pytest.raises(urllib.error.HTTPError) as plain:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(rm_url, timeout=10)
    assert plain.value.code == 401

    rm = ResourceManager(cluster.resource_manager.webapp_address)  # as the user's process
    with pytest.raises(KerberosError, match="no Kerberos ticket: run `kinit"):
        rm.nodes()
    _user_kinit(cluster, user_env)
    assert [n["state"] for n in rm.nodes()] == ["RUNNING"] * SPEC.nodemanagers
    assert "zoo_ray" not in json.dumps(rm.apps())

    # HDFS's web endpoints are HTTPS only (with the cluster's certificate) and SPNEGO too.
    jmx = f"{cluster.namenode_web}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"
    assert jmx.startswith("https://localhost:")
    with hadoop_opener(None, cluster.security.ca_file).open(jmx, timeout=10) as response:
        assert json.loads(response.read())["beans"][0]["Safemode"] == ""


@pytest.mark.parametrize("login, error", [
    ({}, "no Kerberos ticket: run `kinit"),
    ({"principal": "nobody@ZOO.LOCAL"}, "does not hold principal=nobody@ZOO.LOCAL"),
    ({"principal": "USER", "keytab": "/nonexistent/user.keytab"}, "does not exist"),
])
def test_a_bad_login_is_a_typed_error_before_anything_reaches_yarn(cluster, user_env, login,
                                                                   error):
    security = cluster.security
    if "principal" in login:
        login = {"keytab": security.user_keytab, **login}
        login["principal"] = login["principal"].replace("USER", security.user)
    before = len(cluster.resource_manager.apps())
    with pytest.raises(KerberosError, match=re.escape(error)):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=1,
                           executor_cores=1, executor_memory="512m", **login)
    assert len(cluster.resource_manager.apps()) == before
    assert spark_internals.active_context() is None


def test_gpus_from_a_cluster_without_them_are_a_typed_error_before_anything_reaches_yarn(
        cluster):
    """This cluster's NodeManagers have no GPU resource (the session's have pretend ones)."""
    before = len(cluster.resource_manager.apps())
    with pytest.raises(GpuRequestError, match="offers yarn.io/gpu: its administrators"):
        init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=1,
                           executor_cores=1, executor_memory="512m", executor_gpus=1,
                           **keytab_login(cluster))
    assert len(cluster.resource_manager.apps()) == before
    assert spark_internals.active_context() is None


#: What a user's program does once Spark and Ray run (``sc`` the SparkContext): Ray tasks,
#: the data path both ways, and what Spark was told about the login, in ``report``.
_WORK = textwrap.dedent("""
    import json, logging, sys, time
    import ray
    from pyspark.sql import SparkSession
    from zoo_ray.data import from_spark, to_spark

    @ray.remote
    def square(x):
        return x * x

    def work(sc):
        spark = SparkSession(sc)
        ds = from_spark(spark.range(1000))
        back = to_spark(ds.map(lambda row: {"id": row["id"] * 2}), spark)
        return {"app": sc.applicationId,
                "squares": ray.get([square.remote(i) for i in range(4)]),
                "rows": ds.count(), "sum": back.groupBy().sum("id").first()[0],
                "conf": {k: v for k, v in sc.getConf().getAll() if "kerberos" in k
                         or "extraJavaOptions" in k}}
""")

#: A user's program with a keytab: the three lines, the work, and a second RayContext on
#: the same application (the tokens are the application's). Two executors, one on each
#: NodeManager (a host holds one).
_PROGRAM = _WORK + textwrap.dedent("""
    from zoo_ray import RayContext, init_spark_on_yarn
    logging.basicConfig()
    logging.getLogger("zoo_ray").setLevel(logging.INFO)  # what it shipped, and how
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=2, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g", **json.loads(sys.argv[2]))
    ray_ctx = RayContext(sc=sc, object_store_memory="128m")
    ray_ctx.init()
    report = work(sc)
    ray_ctx.stop()
    again = RayContext(sc=sc, object_store_memory="128m")
    again.init()
    report["again"] = ray.get(square.remote(5))
    again.stop()
    print(json.dumps(report), flush=True)
    sc.stop()
""")

#: A Ray script a user logged in with ``kinit`` hands to ``zoo-ray submit``: the work and its
#: report; once the application's first tokens are dead (a minute here), Spark's tasks
#: write and read HDFS with the tokens Spark fetched from the ticket cache since, and say
#: so; then on until stopped.
_SUBMITTED = _WORK + textwrap.dedent("""
    from pyspark import SparkContext
    ray.init()
    sc = SparkContext._active_spark_context
    print(json.dumps(work(sc)), flush=True)
    time.sleep(max(0.0, sc.startTime / 1000 + 75 - time.time()))
    spark = SparkSession(sc)
    spark.range(100).write.mode("overwrite").parquet("later.parquet")
    print(json.dumps({"later": spark.read.parquet("later.parquet").count()}), flush=True)
    while True:
        time.sleep(60)
""")

#: The environment's layers this module's programs found on HDFS or put there.
_SHIPPED: set[str] = set()


def _user_program_env(cluster: MiniCluster, ccache: Path) -> dict[str, str]:
    """The environment of a user's program on the gateway, logged in with ``ccache``."""
    env = program_env(cluster)
    env.update(KRB5_CONFIG=str(cluster.security.realm.krb5_conf), KRB5CCNAME=f"FILE:{ccache}")
    return env


def _check_program(cluster: MiniCluster, report: dict, log: str, login: str) -> None:
    """What both logins' programs must show: Ray and the data path ran, the environment
    was packed once for the module, every JVM was told the realm, and how Spark logs in."""
    assert report["squares"] == [0, 1, 4, 9]
    assert (report["rows"], report["sum"]) == (1000, 999 * 1000)
    # The environment's layers, each uploaded or found once.
    uploaded = re.findall(r"Uploading \S+ \(\d+ bytes\) to (hdfs://\S+/layers/\S+)", log)
    reused = re.findall(r"Reusing (hdfs://\S+/layers/\S+) on the cluster", log)
    shipped = set(uploaded + reused)
    assert len(shipped) > 1 and len(uploaded + reused) == len(shipped), (uploaded, reused)
    if _SHIPPED:  # an earlier program of the module put them there
        assert not uploaded and shipped == _SHIPPED, (uploaded, reused, _SHIPPED)
    _SHIPPED.update(shipped)
    krb5 = f"-Djava.security.krb5.conf={cluster.security.realm.krb5_conf}"
    # Java reads no KRB5_CONFIG: every JVM of the application was told the realm's file.
    for jvm in ("driver", "executor", "yarn.am"):
        assert krb5 in report["conf"][f"spark.{jvm}.extraJavaOptions"].split()
    if login == "keytab":
        assert report["conf"]["spark.kerberos.keytab"] == cluster.security.user_keytab
    else:
        assert report["conf"]["spark.kerberos.renewal.credentials"] == "ccache"
    # The keytab never went to HDFS: nothing in the application's staging files names it.
    staged = cluster.fs("-ls", "-R", f"/user/{psutil.Process().username()}")
    assert Path(cluster.security.user_keytab).name not in staged


def test_a_user_after_kinit_submits_and_status_stop_logs_and_pack_work(cluster, user_env,
                                                                       tmp_path):
    """The ``zoo-ray`` commands as a user logged in with ``kinit`` runs them: each REST call
    (status, stop) and HDFS (pack) with the user's ticket; ``zoo-ray logs`` from the
    NodeManagers (SPNEGO) while the application runs, then from HDFS, where YARN aggregated
    them with the tokens the ResourceManager got it (it outlives its first ones)."""
    _user_kinit(cluster, user_env)
    env = _user_program_env(cluster, user_env)
    script, err = tmp_path / "secure_job.py", tmp_path / "submit.err"
    script.write_text(_SUBMITTED)
    with ExitStack() as cleanup:
        proc, report = submit_in_background(script, env, err, cleanup)
        app_id = report["app"]
        later = proc.stdout.readline()
        assert json.loads(later or "{}").get("later") == 100, err.read_text()[-3000:]
        pids = ray_pids(app_id)
        status = zoo_ray_cli(["status", app_id], env, timeout=60)
        assert status.returncode == 0, status.stderr
        [shown] = json.loads(status.stdout)
        assert (shown["state"], shown["user"]) == ("RUNNING", psutil.Process().username())
        executors = {c["container"] for c in shown["containers"] if c["role"] == "executor"}
        assert len(executors) == 2
        assert {n["container"] for n in shown["ray"]["nodes"]} == executors
        running = zoo_ray_cli(["logs", "--dir", str(cluster.dir), app_id], env, timeout=300)
        assert running.returncode == 0, running.stderr[-3000:]
        assert all(f"Container: {container}" in running.stdout for container in executors)
        stopped = zoo_ray_cli(["stop", app_id], env, timeout=120)
        assert stopped.stdout.strip() == f"{app_id}: KILLED", stopped.stderr
        assert all_gone(pids), "the executors' and the gateway's Ray nodes are gone"
    _check_program(cluster, report, err.read_text(), "ticket cache")

    logs = zoo_ray_cli(["logs", "--dir", str(cluster.dir), app_id], env, timeout=300)
    assert logs.returncode == 0, logs.stderr[-3000:]
    # Aggregated to the secure HDFS: each executor's, its Ray node's manager log with it.
    assert all(f"Container: {container}" in logs.stdout for container in executors)
    assert re.findall(r"^LogType:ray_manager\.log$", logs.stdout, re.M) == [
        "LogType:ray_manager.log"] * 2

    packed = zoo_ray_cli(["pack"], env, timeout=600)
    assert packed.returncode == 0, packed.stderr[-3000:]
    assert {part["remote"] for part in json.loads(packed.stdout)["parts"]} == _SHIPPED
    assert "Reusing" in packed.stderr and "Uploading" not in packed.stderr

    no_ticket = zoo_ray_cli(["status"], {**env, "KRB5CCNAME": f"FILE:{tmp_path / 'none'}"},
                            timeout=60)
    assert no_ticket.returncode == 2 and "run `kinit" in no_ticket.stderr
    assert no_ticket.stderr.count("\n") == 1, no_ticket.stderr


def test_a_program_with_a_keytab_runs_two_ray_contexts(cluster, user_env, tmp_path):
    log = tmp_path / "driver.log"
    env = _user_program_env(cluster, user_env)
    driver, report = start_driver(_PROGRAM, [str(cluster.hadoop_conf_dir),
                                             json.dumps(keytab_login(cluster))], log, env)
    try:
        assert driver.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert report["again"] == 25
    _check_program(cluster, report, log.read_text(), "keytab")
    assert not user_env.exists(), "a keytab login leaves the user's ticket cache alone"
    wait_app_end(cluster, report["app"])
    app = cluster.resource_manager.app(report["app"])
    assert app["user"] == psutil.Process().username() and app["finalStatus"] == "SUCCEEDED"


#: The life of a ticket that cannot be renewed (``kinit -l -r``), in seconds: long enough
#: for the program to start and list a file while it lasts, with the suite's other worker
#: busy beside it (60 s was not, once: listed after 68 s).
_TICKET_S = 120

#: A program whose ticket ends unrenewed (at argv[3], a time). It lists an HDFS file
#: (argv[2]) while the ticket lasts and says when; once the application's tokens are dead
#: it reads the file with from_spark: the watch's error, then from_spark's KerberosError.
#: Spark fetches tokens while the ticket lasts, and unrenewed they end 20 s later (the
#: cluster's renew interval); the first ones, renewed by YARN, live 60 s.
#: The two programs run at once (AHEAD), each with one executor holding its head node and an
#: ApplicationMaster in a container (Kerberos), on two hosts of 3072 MB. With Spark's
#: ApplicationMaster of 896 MB an executor could have 1536 MB (two on one host), and the
#: quickstart's head outgrew that by 32 MB once; with one of 640 MB (a 256 MB heap: it only
#: asks YARN for one executor) no host can take two executors of 1664 MB, and either host
#: holds one beside both ApplicationMasters, however YARN places them.
_SMALL_AM = {"PYSPARK_SUBMIT_ARGS": "--conf spark.yarn.am.memory=256m pyspark-shell"}
_AHEAD_RAY_MEMORY = "768m"

_EXPIRING = textwrap.dedent("""
    import json, logging, sys, time
    from pyspark.sql import SparkSession
    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.data import from_spark
    from zoo_ray.errors import GpuRequestError, KerberosError
    logging.basicConfig()
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=1, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray=sys.argv[4])
    df = SparkSession(sc).read.text(sys.argv[2])
    print(json.dumps({"listed": time.time()}), flush=True)
    ray_ctx = RayContext(sc=sc, object_store_memory="128m")
    ray_ctx.init()
    dead = max(float(sys.argv[3]) + 25, sc.startTime / 1000 + 70)
    time.sleep(max(0.0, dead - time.time()))
    report = {}
    try:
        report["rows"] = from_spark(df).count()
    except KerberosError as exc:
        report["error"] = str(exc)
    ray_ctx.stop()
    sc.stop()
    print(json.dumps(report), flush=True)
""")


def _expiring_ticket(cluster, tmp, cleanup):
    """The program above, after `kinit` for a ticket of :data:`_TICKET_S` that cannot be
    renewed. It needs the environment in the NodeManagers' caches (the module's first
    program put it there): a cold start would outlast the ticket."""
    security, ccache = cluster.security, tmp / "krb5cc"
    password = Path(security.password_file).read_text()
    logged_in = time.time()
    result = kinit(security.realm, ccache, "-l", f"{_TICKET_S}s", "-r", f"{_TICKET_S}s",
                   security.user, password=password)
    assert result.returncode == 0, result.stderr
    lines = tmp / "lines.txt"
    lines.write_text("".join(f"{i}\n" for i in range(100)))
    hdfs_file = f"/user/{psutil.Process().username()}/expiring.txt"
    put = _fs_as(cluster, ccache, "-put", "-f", str(lines), hdfs_file)
    assert put.returncode == 0, put.stderr
    log = tmp / "driver.log"
    driver, listed = start_driver(
        _EXPIRING, [str(cluster.hadoop_conf_dir), hdfs_file, str(logged_in + _TICKET_S),
                    _AHEAD_RAY_MEMORY], log, {**_user_program_env(cluster, ccache), **_SMALL_AM})
    cleanup.callback(end_program, driver)
    report = json.loads(driver.stdout.readline() or "{}")
    assert driver.wait(120) == 0, log.read_text()[-3000:]
    return {**listed, **report}, log.read_text(), logged_in


def _quickstart(cluster, tmp, _cleanup):
    import nbformat

    ccache = tmp / "krb5cc"
    _user_kinit(cluster, ccache)
    notebook = nbformat.read(NOTEBOOK_DIR / "01_quickstart.ipynb", as_version=4)
    env = {**_user_program_env(cluster, ccache), **_SMALL_AM}
    env.update(ZOO_RAY_NUM_EXECUTORS="1", ZOO_RAY_EXTRA_MEMORY_FOR_RAY=_AHEAD_RAY_MEMORY,
               ZOO_RAY_OBJECT_STORE_MEMORY="128m")
    run_notebook(notebook, tmp, env)
    nbformat.write(notebook, tmp / "01_quickstart.ipynb")  # to look at
    return notebook


#: Run at once (see _quickstart for their room).
AHEAD = {"test_the_quickstart_notebook_runs_after_kinit": _quickstart,
         "test_a_ticket_that_ends_unrenewed_is_told_and_from_spark_says_so": _expiring_ticket}


def test_the_quickstart_notebook_runs_after_kinit(ahead_result):
    assert notebook_problems(ahead_result) == []


def test_a_ticket_that_ends_unrenewed_is_told_and_from_spark_says_so(ahead_result):
    report, log, logged_in = ahead_result
    assert report["listed"] < logged_in + _TICKET_S, "listed in the ticket's life"
    assert "Your Kerberos ticket expired" in log and "was not renewed" in log, log[-3000:]
    assert "from_spark failed: HDFS refused the application's delegation token" in report.get(
        "error", ""), report


def test_down_leaves_no_process_and_no_port(own_cluster_to_stop):
    # After every test on this local Hadoop (test_yarn_takes_executors's too).
    cluster = own_cluster_to_stop
    pids = [d["pid"] for d in cluster.status()["daemons"].values()]
    ports = list(cluster.ports.values())
    # The KDC, the NameNode, the DataNode, the ResourceManager and the NodeManagers.
    assert len(pids) == 4 + SPEC.nodemanagers
    result = subprocess.run([sys.executable, "-m", "zoo_ray.cli", "minicluster", "down",
                             "--dir", str(cluster.dir)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert [p for p in pids if psutil.pid_exists(p)
            and psutil.Process(p).status() != psutil.STATUS_ZOMBIE] == []
    assert [p for p in ports if not port_free("127.0.0.1", p)] == []
