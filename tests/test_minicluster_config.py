"""The local Hadoop's spec, port plan and rendered configuration (no daemons started)."""
from __future__ import annotations

import subprocess

import pytest

from zoo_ray.errors import ZooRayError
from zoo_ray.hadoop_conf import HadoopConf
from zoo_ray.minicluster import MiniClusterSpec
from zoo_ray.minicluster.config import plan_ports, render


def test_spec_round_trips_through_a_dict():
    spec = MiniClusterSpec(nodemanagers=3, nm_memory_mb=4096, base_port=20000,
                           heap_mb={"namenode": 300})
    again = MiniClusterSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.heap_mb["namenode"] == 300
    assert again.heap_mb["nodemanager"] == spec.heap_mb["nodemanager"]


@pytest.mark.parametrize("kwargs", [
    {"nodemanagers": 0}, {"nm_memory_mb": 100}, {"nm_vcores": 0}, {"base_port": 80},
    {"gpus": -1}, {"gpus": True},
])
def test_spec_rejects_impossible_values(kwargs):
    with pytest.raises(ZooRayError):
        MiniClusterSpec(**kwargs)


def test_spec_rejects_unknown_fields():
    with pytest.raises(ZooRayError, match="nodemangers"):
        MiniClusterSpec.from_dict({"nodemangers": 2})


def test_free_ports_are_distinct_and_cover_every_nodemanager():
    ports = plan_ports(MiniClusterSpec(nodemanagers=3))
    assert len(set(ports.values())) == len(ports)
    assert {"nm2_rpc", "nm2_localizer", "nm2_web", "nn_rpc", "rm_web"} <= set(ports)


def test_base_port_gives_a_consecutive_block():
    ports = plan_ports(MiniClusterSpec(nodemanagers=2, base_port=30000))
    assert sorted(ports.values()) == list(range(30000, 30000 + len(ports)))


def test_each_nodemanager_gets_its_own_ports_and_dirs(tmp_path):
    spec = MiniClusterSpec(nodemanagers=2, nm_memory_mb=4096, nm_vcores=6)
    ports = plan_ports(spec)
    dirs = render(spec, tmp_path, ports)
    client = HadoopConf(dirs["client"])
    nms = [HadoopConf(dirs[f"nm{i}"]) for i in range(2)]

    assert client.get("fs.defaultFS") == f"hdfs://127.0.0.1:{ports['nn_rpc']}"
    assert client.get("yarn.resourcemanager.webapp.address") == f"127.0.0.1:{ports['rm_web']}"
    assert client.get("yarn.nodemanager.resource.memory-mb") == "4096"
    assert client.get("yarn.nodemanager.resource.cpu-vcores") == "6"
    assert client.get("dfs.replication") == "1"
    # Kept from the documented example, not set by the renderer.
    assert client.get("yarn.log-aggregation-enable") == "true"
    assert client.get("yarn.scheduler.capacity.root.queues") == "default,batch,tiny,adhoc"

    keys = ("yarn.nodemanager.address", "yarn.nodemanager.localizer.address",
            "yarn.nodemanager.webapp.address", "yarn.nodemanager.local-dirs",
            "yarn.nodemanager.log-dirs")
    values = [nm.get(key) for nm in nms for key in keys]
    assert len(set(values)) == len(values)
    assert nms[1].get("yarn.nodemanager.address") == f"127.0.0.1:{ports['nm1_rpc']}"
    assert all(str(tmp_path) in nm.get("yarn.nodemanager.local-dirs") for nm in nms)


@pytest.mark.parametrize("enforce", [False, True])
def test_nodemanagers_enforce_container_memory_only_when_asked(tmp_path, enforce):
    spec = MiniClusterSpec(nodemanagers=2, enforce_memory=enforce)
    dirs = render(spec, tmp_path, plan_ports(spec))
    for nm in ("nm0", "nm1"):
        conf = HadoopConf(dirs[nm])
        assert conf.get("yarn.nodemanager.pmem-check-enabled") == "true"
        # Hadoop's default (true) skips the NodeManager's own check: nothing is enforced.
        assert conf.get("yarn.nodemanager.resource.memory.enforced") == (
            "false" if enforce else None)
    assert MiniClusterSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("preemption", [False, True])
def test_the_resourcemanager_preempts_only_when_asked(tmp_path, preemption):
    spec = MiniClusterSpec(nodemanagers=1, preemption=preemption)
    conf = HadoopConf(render(spec, tmp_path, plan_ports(spec))["client"])
    assert conf.get("yarn.resourcemanager.scheduler.monitor.enable") == (
        "true" if preemption else None)
    policies = conf.get("yarn.resourcemanager.scheduler.monitor.policies") or ""
    assert policies.endswith(".ProportionalCapacityPreemptionPolicy") == preemption
    assert MiniClusterSpec.from_dict(spec.to_dict()) == spec


def test_delegation_tokens_last_as_long_as_the_spec_says(tmp_path):
    spec = MiniClusterSpec(nodemanagers=1, kerberos=True, token_renew_interval_s=60,
                           token_max_lifetime_s=300)
    conf = HadoopConf(render(spec, tmp_path, plan_ports(spec))["client"])
    for prefix in ("dfs.namenode", "yarn.resourcemanager"):
        assert conf.get(f"{prefix}.delegation.token.renew-interval") == "60000"
        assert conf.get(f"{prefix}.delegation.token.max-lifetime") == "300000"
    # The ResourceManager replaces an application's HDFS tokens in their last renewal.
    assert conf.get("yarn.resourcemanager.system-credentials.valid-time-remaining") == "30000"
    assert MiniClusterSpec.from_dict(spec.to_dict()) == spec
    default = MiniClusterSpec(nodemanagers=1, kerberos=True)
    conf = HadoopConf(render(default, tmp_path / "default", plan_ports(default))["client"])
    assert conf.get("dfs.namenode.delegation.token.max-lifetime") is None  # Hadoop's 7 days


@pytest.mark.parametrize("kwargs, match", [
    ({"token_max_lifetime_s": 300}, "set kerberos=True"),
    ({"kerberos": True, "token_renew_interval_s": 5}, ">= 10"),
    ({"kerberos": True, "token_renew_interval_s": 600, "token_max_lifetime_s": 300},
     "cannot be renewed past its lifetime"),
])
def test_impossible_token_lifetimes_are_refused_naming_the_fix(kwargs, match):
    with pytest.raises(ZooRayError, match=match):
        MiniClusterSpec(nodemanagers=1, **kwargs)


def test_pretend_gpus_go_to_yarn_s_gpu_plugin_numbered_apart_per_nodemanager(tmp_path):
    spec = MiniClusterSpec(nodemanagers=2, gpus=2)
    dirs = render(spec, tmp_path, plan_ports(spec))
    assert HadoopConf(dirs["client"]).get("yarn.resource-types") == "yarn.io/gpu"
    listed = []
    for nm in ("nm0", "nm1"):
        conf = HadoopConf(dirs[nm])
        assert conf.get("yarn.nodemanager.resource-plugins") == "yarn.io/gpu"
        smi = conf.get("yarn.nodemanager.resource-plugins.gpu.path-to-discovery-executables")
        # The containers learn their NodeManager's stand-in, beside the cluster's admin env.
        admin_env = conf.raw("yarn.nodemanager.admin-env").split(",")
        assert f"ZOO_RAY_NVIDIA_SMI={smi}" in admin_env and len(admin_env) == 3
        listed.append(subprocess.run([smi, "--query-gpu=index,uuid", "--format=csv,noheader"],
                                     capture_output=True, text=True, check=True).stdout)
    assert [[line.split(",")[0] for line in out.splitlines()] for out in listed] == [
        ["0", "1"], ["2", "3"]]
    assert MiniClusterSpec.from_dict(spec.to_dict()) == spec
    plain = MiniClusterSpec(nodemanagers=1)
    conf = HadoopConf(render(plain, tmp_path / "plain", plan_ports(plain))["nm0"])
    assert conf.get("yarn.resource-types") is None
    assert conf.get("yarn.nodemanager.resource-plugins") is None
