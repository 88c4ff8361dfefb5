"""HadoopConf: reading, expanding and rewriting Hadoop XML configuration."""
from __future__ import annotations

import getpass

import pytest

from zoo_ray.errors import HadoopConfError
from zoo_ray.hadoop_conf import HadoopConf
from zoo_ray.minicluster.config import template_dir


def _write(conf_dir, name, props, comment="a comment worth keeping"):
    body = "".join(
        f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in props.items()
    )
    (conf_dir / name).write_text(
        f'<?xml version="1.0"?>\n<!-- {comment} -->\n<configuration>\n{body}</configuration>\n'
    )


def test_reads_the_documented_example_and_expands_references():
    conf = HadoopConf(template_dir())
    assert conf.get("yarn.resourcemanager.webapp.address") == "resourcemanager.example.com:8088"
    assert conf.raw("yarn.resourcemanager.webapp.address").startswith("${")
    assert conf.get("hadoop.tmp.dir") == f"/tmp/hadoop-{getpass.getuser()}"
    assert conf.get("yarn.scheduler.capacity.root.queues") == "default,batch,tiny,adhoc"


def test_later_files_override_earlier_ones(tmp_path):
    _write(tmp_path, "core-site.xml", {"a": "core", "only.core": "1"})
    _write(tmp_path, "yarn-site.xml", {"a": "yarn"})
    conf = HadoopConf(tmp_path)
    assert conf.get("a") == "yarn"
    assert conf.get("only.core") == "1"
    assert conf.get("missing", "fallback") == "fallback"
    assert "missing" not in conf


def test_write_round_trips_values_and_keeps_comments(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _write(src, "core-site.xml", {"fs.defaultFS": "hdfs://nn:8020"})
    _write(src, "yarn-site.xml", {"x": "${fs.defaultFS}/x"})
    conf = HadoopConf(src)
    conf.set({"yarn-site.xml": {"new.key": "v1"}, "hdfs-site.xml": {"dfs.replication": "1"}})
    conf.write(dest)
    again = HadoopConf(dest)
    assert again.get("x") == "hdfs://nn:8020/x"
    assert again.get("new.key") == "v1"
    assert again.get("dfs.replication") == "1"
    assert "a comment worth keeping" in (dest / "yarn-site.xml").read_text()


def test_references_that_loop_do_not_hang(tmp_path):
    _write(tmp_path, "core-site.xml", {"a": "${b}", "b": "${a}"})
    _write(tmp_path, "yarn-site.xml", {})
    assert HadoopConf(tmp_path).get("a") in ("${a}", "${b}")


def test_missing_directory_names_the_fix(tmp_path):
    with pytest.raises(HadoopConfError, match="HADOOP_CONF_DIR"):
        HadoopConf(tmp_path / "nope")


def test_missing_site_file_names_the_fix(tmp_path):
    _write(tmp_path, "core-site.xml", {})
    with pytest.raises(HadoopConfError, match="yarn-site.xml"):
        HadoopConf(tmp_path)


def test_invalid_xml_names_the_file(tmp_path):
    _write(tmp_path, "core-site.xml", {})
    (tmp_path / "yarn-site.xml").write_text("<configuration><property>")
    with pytest.raises(HadoopConfError, match="yarn-site.xml is not valid XML"):
        HadoopConf(tmp_path)


def test_require_names_the_missing_property(tmp_path):
    _write(tmp_path, "core-site.xml", {})
    _write(tmp_path, "yarn-site.xml", {})
    with pytest.raises(HadoopConfError, match="yarn.resourcemanager.hostname is not set"):
        HadoopConf(tmp_path).require("yarn.resourcemanager.hostname")
