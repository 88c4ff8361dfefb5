"""The isolated hosts' plan: names, addresses, hosts file, round trip (nothing is created)."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from zoo_ray.errors import ZooRayError
from zoo_ray.hadoop_conf import HadoopConf
from zoo_ray.minicluster import MiniClusterSpec
from zoo_ray.minicluster.config import plan_ports, render
from zoo_ray.minicluster.netns import TEST_RANGE, Network, launcher


def test_every_address_is_in_the_test_range_and_names_fit_the_kernel_limits():
    network = Network.plan(Path("/tmp/some/cluster"), 200)
    addresses = [network.gateway_ip] + [h.ip for h in network.hosts]
    assert all(ipaddress.ip_address(a) in TEST_RANGE for a in addresses)
    assert len(set(addresses)) == 201
    subnet = ipaddress.ip_network(f"{network.gateway_ip}/{network.prefix_len}", strict=False)
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    # Interface names: at most 15 bytes; every one carries the cluster's tag.
    links = [network.bridge] + [h.veth for h in network.hosts] + [f"zr{network.tag}i199"]
    assert all(len(name) <= 15 and name.startswith(f"zr{network.tag}") for name in links)
    assert len({h.netns for h in network.hosts}) == 200


def test_two_cluster_directories_get_different_names_and_one_directory_the_same():
    one, other = Network.plan(Path("/a"), 2), Network.plan(Path("/b"), 2)
    assert one.tag != other.tag and one.bridge != other.bridge
    assert Network.plan(Path("/a"), 2) == one


def test_the_plan_round_trips_through_a_dict():
    network = Network.plan(Path("/tmp/x"), 3)
    assert Network.from_dict(network.to_dict()) == network


def test_hosts_file_names_every_host_by_address_with_its_hostname_as_alias():
    network = Network.plan(Path("/tmp/x"), 2)
    lines = [line.split() for line in network.hosts_file().splitlines()]
    assert ["127.0.0.1", "localhost"] in lines
    for host in network.hosts:
        assert [host.ip, host.ip, host.hostname] in lines
    assert [network.gateway_ip, network.gateway_ip, "zr-gateway"] in lines


def test_the_launcher_enters_the_namespace_and_names_the_host():
    host = Network.plan(Path("/tmp/x"), 1).hosts[0]
    argv = launcher(host)
    assert argv[:4] == ["ip", "netns", "exec", host.netns]
    assert argv[-3:] == ["zoo_ray.minicluster.hostexec", host.hostname, "--"]


def test_isolated_hosts_render_each_nodemanager_on_its_own_address(tmp_path):
    spec = MiniClusterSpec(nodemanagers=2, isolated_hosts=True)
    network = Network.plan(tmp_path, 2)
    ports = plan_ports(spec)
    dirs = render(spec, tmp_path, ports, network.gateway_ip, [h.ip for h in network.hosts])
    client = HadoopConf(dirs["client"])
    assert client.get("fs.defaultFS") == f"hdfs://{network.gateway_ip}:{ports['nn_rpc']}"
    assert client.get("yarn.resourcemanager.address").startswith(network.gateway_ip + ":")
    for i, host in enumerate(network.hosts):
        nm = HadoopConf(dirs[f"nm{i}"])
        assert nm.get("yarn.nodemanager.hostname") == host.ip
        assert nm.get("yarn.nodemanager.address") == f"{host.ip}:{ports[f'nm{i}_rpc']}"


def test_more_hosts_than_a_24_holds_are_refused():
    with pytest.raises(ZooRayError, match="at most 200"):
        MiniClusterSpec(nodemanagers=201, isolated_hosts=True)
