"""The ResourceManager REST client's errors (the happy paths run in tests/e2e)."""
from __future__ import annotations

import socket

import pytest

from zoo_ray.errors import HadoopConfError, ResourceManagerError
from zoo_ray.yarn import ResourceManager


def test_unreachable_resourcemanager_names_the_address_and_the_fix():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        rm = ResourceManager(f"127.0.0.1:{port}", timeout=2)
        with pytest.raises(ResourceManagerError, match=f"127.0.0.1:{port}.*HADOOP_CONF_DIR"):
            rm.nodes()


def test_from_conf_reads_the_webapp_address(tmp_path):
    (tmp_path / "core-site.xml").write_text("<configuration/>")
    (tmp_path / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.hostname</name>"
        "<value>rm.example.com</value></property></configuration>"
    )
    assert ResourceManager.from_conf(tmp_path).webapp_address == "rm.example.com:8088"


def test_from_conf_without_resourcemanager_names_the_property(tmp_path):
    (tmp_path / "core-site.xml").write_text("<configuration/>")
    (tmp_path / "yarn-site.xml").write_text("<configuration/>")
    with pytest.raises(HadoopConfError, match="yarn.resourcemanager.hostname"):
        ResourceManager.from_conf(tmp_path)
