"""init_spark_on_yarn's argument checks and settings, without a cluster (the rest: tests/e2e)."""
from __future__ import annotations

import os

import pytest

from zoo_ray import init_spark_on_yarn
from zoo_ray.errors import InvalidArgumentError, InvalidMemoryError
from zoo_ray.spark_settings import spark_settings
from zoo_ray.yarn_request import check_arguments

_DEFAULTS = dict(
    hadoop_conf=None, conda_name=None, num_executors=2, executor_cores=2,
    executor_memory="2g", driver_memory="1g", driver_cores=4,
    extra_executor_memory_for_ray=None, extra_python_lib=None, penv_archive=None,
    additional_archive=None, hadoop_user_name=None, spark_yarn_archive=None, jars=None,
    conf=None, queue=None, app_name="zoo_ray", env_prefix=None, principal=None, keytab=None,
    tags=None, cache_dir=None, executor_timeout=300.0,
)


def _request(**overrides):
    return check_arguments(**{**_DEFAULTS, **overrides})


@pytest.mark.parametrize("overrides, error, match", [
    ({"principal": "zoo@EXAMPLE.COM"}, InvalidArgumentError, "principal= and keytab= together"),
    ({"num_executors": 0}, InvalidArgumentError, "num_executors=0"),
    ({"executor_cores": True}, InvalidArgumentError, "executor_cores=True"),
    ({"driver_memory": "1x"}, InvalidMemoryError, "driver_memory='1x'"),
    ({"conda_name": "a", "env_prefix": "/b"}, InvalidArgumentError, "only one"),
    ({"executor_gpus": -1}, InvalidArgumentError, "executor_gpus=-1"),
    ({"executor_gpus": 1, "conf": {"spark.task.resource.gpu.amount": "1"}},
     InvalidArgumentError, "drop them from conf"),
])
def test_bad_arguments_fail_before_the_cluster_or_the_environment_is_touched(
        overrides, error, match, monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    before = dict(os.environ)
    # The Hadoop configuration does not exist: reaching it would be another error.
    with pytest.raises(error, match=match):
        init_spark_on_yarn(**{**_DEFAULTS, "hadoop_conf": "/nonexistent/conf", **overrides})
    assert dict(os.environ) == before


def test_gpus_are_the_executors_not_spark_s_tasks():
    settings = spark_settings(_request(executor_gpus=2))
    assert settings["spark.executor.resource.gpu.amount"] == "2"
    assert settings["spark.executor.resource.gpu.discoveryScript"] == "./zoo_ray_gpus.sh"
    assert settings["spark.executorEnv.ZOO_RAY_EXECUTOR_GPUS"] == "2"
    assert not any(key.startswith("spark.task.resource") for key in settings)
    assert not any("resource.gpu" in key for key in spark_settings(_request()))


def test_settings_are_a_pure_function_of_the_request():
    request = _request(
        num_executors=3, executor_cores=4, executor_memory="1g", queue="batch",
        extra_executor_memory_for_ray="3g", tags="a,b", jars=["x.jar", "y.jar"],
        principal="zoo@EXAMPLE.COM", keytab="/etc/zoo.keytab",
        conf={"spark.executor.memoryOverhead": "512m", "spark.executor.cores": "8",
              "spark.sql.shuffle.partitions": "7"},
    )
    settings = spark_settings(request)
    assert settings == spark_settings(request)
    assert settings["spark.master"] == "yarn" and settings["spark.submit.deployMode"] == "client"
    assert settings["spark.executor.instances"] == "3"
    assert settings["spark.executor.cores"] == "8"  # the user's conf wins ...
    assert settings["spark.executor.memoryOverhead"] == "3584m"  # ... but Ray's share is added
    assert settings["spark.zoo_ray.rayMemory"] == str(3 * 2**30)
    assert settings["spark.yarn.queue"] == "batch"
    # zoo_ray's tag (status, stop), this launch's own tag, then the user's.
    tags = settings["spark.yarn.tags"].split(",")
    assert tags == ["zoo_ray", request.launch_tag, "a", "b"]
    assert request.launch_tag.startswith("zoo_ray-") and request.launch_tag == (
        request.launch_tag.lower())
    assert _request().launch_tag != request.launch_tag
    assert settings["spark.jars"] == "x.jar,y.jar"
    assert settings["spark.kerberos.keytab"] == "/etc/zoo.keytab"
    assert settings["spark.sql.shuffle.partitions"] == "7"
    assert settings["spark.python.daemon.module"] == "zoo_ray.executor_daemon"
    # The SparkContext does not wait for executors: executor_timeout is the one wait.
    assert settings["spark.scheduler.minRegisteredResourcesRatio"] == "0"
    assert request.container_mb == 1024 + 3584


def test_zoo_ray_s_tags_join_the_user_s_spark_yarn_tags_never_give_way():
    request = _request(tags="a", conf={"spark.yarn.tags": "team-x,a"})
    tags = spark_settings(request)["spark.yarn.tags"].split(",")
    assert tags == ["zoo_ray", request.launch_tag, "a", "team-x"]


def test_the_driver_listens_on_the_address_facing_the_cluster_unless_the_user_says():
    assert "spark.driver.host" not in spark_settings(_request())
    assert spark_settings(_request(), "198.18.0.1")["spark.driver.host"] == "198.18.0.1"
    mine = _request(conf={"spark.driver.host": "gw.example.com"})
    assert spark_settings(mine, "198.18.0.1")["spark.driver.host"] == "gw.example.com"


def test_a_loopback_answer_for_a_resource_manager_not_on_loopback_leaves_the_choice_to_spark():
    from zoo_ray.spark_settings import driver_host
    from zoo_ray.yarn import ResourceManager

    assert driver_host(ResourceManager("127.0.0.1:8088")) == "127.0.0.1"  # the local Hadoop
    assert driver_host(ResourceManager("localhost:8088")) is None  # a name for this machine
    assert driver_host(ResourceManager("0.0.0.0:8088")) is None


def test_a_kerberos_login_adds_what_spark_s_jvms_need_before_the_user_s_options():
    from zoo_ray.kerberos import Login

    java = "-Dmine=1"
    request = _request(conf={"spark.executor.extraJavaOptions": java})
    by_cache = spark_settings(request, None, Login(ends_at=3600.0,
                                                   krb5_config="/realm/krb5.conf"))
    krb5 = "-Djava.security.krb5.conf=/realm/krb5.conf"
    assert by_cache["spark.executor.extraJavaOptions"] == f"{krb5} {java}"
    assert by_cache["spark.driver.extraJavaOptions"] == krb5
    assert by_cache["spark.yarn.am.extraJavaOptions"] == krb5
    assert by_cache["spark.kerberos.renewal.credentials"] == "ccache"
    # New tokens before half the old ones' life: an executor that missed one round lives on.
    assert float(by_cache["spark.security.credentials.renewalRatio"]) < 0.5

    keytab = _request(principal="bob@R", keytab="/home/bob/bob.keytab")
    by_keytab = spark_settings(keytab, None, Login("bob@R", "/home/bob/bob.keytab"))
    assert by_keytab["spark.kerberos.principal"] == "bob@R"
    assert "spark.kerberos.renewal.credentials" not in by_keytab
    assert float(by_keytab["spark.security.credentials.renewalRatio"]) < 0.5
    mine = _request(conf={"spark.security.credentials.renewalRatio": "0.3"})
    assert spark_settings(mine, None, Login(ends_at=3600.0))[
        "spark.security.credentials.renewalRatio"] == "0.3"
    # /etc/krb5.conf (no KRB5_CONFIG): nothing for the JVMs; an open cluster: nothing at all.
    assert not any("extraJavaOptions" in key for key in by_keytab)
    plain = _request()
    assert spark_settings(plain) == spark_settings(plain, None, None)


def test_an_unmanaged_am_hands_executors_the_user_a_container_am_would():
    from zoo_ray.kerberos import Login

    request = _request()
    settings = spark_settings(request, None, None, "alice", unmanaged_am=True)
    assert settings["spark.yarn.unmanagedAM.enabled"] == "true"
    assert settings["spark.executorEnv.SPARK_USER"] == "alice"
    managed = spark_settings(request, None, None, "alice")
    assert managed["spark.yarn.unmanagedAM.enabled"] == "false"
    assert "spark.executorEnv.SPARK_USER" not in managed
    # A Kerberos login names the user itself.
    assert "spark.executorEnv.SPARK_USER" not in spark_settings(
        request, None, Login(ends_at=3600.0), "alice", unmanaged_am=True)
    # The choice (zoo_ray.app_master) saw the user's setting: it is the one that counts.
    mine = _request(conf={"spark.yarn.unmanagedAM.enabled": "true",
                          "spark.executorEnv.SPARK_USER": "bob"})
    chosen = spark_settings(mine, None, None, "alice", unmanaged_am=False)
    assert chosen["spark.yarn.unmanagedAM.enabled"] == "false"
    assert chosen["spark.executorEnv.SPARK_USER"] == "bob"
