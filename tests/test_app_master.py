"""Where Spark's ApplicationMaster runs (zoo_ray.app_master): real sockets on loopback, a
ResourceManager stand-in that only lists NodeManagers."""
from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from zoo_ray.app_master import UNMANAGED_AM_CONF, choose_app_master
from zoo_ray.errors import InvalidArgumentError
from zoo_ray.hadoop_conf import HadoopConf


@contextmanager
def _listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once it is closed


class _Nodes:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.asked: list[str | None] = []

    def nodes(self, states: str | None = None) -> list[dict[str, Any]]:
        self.asked.append(states)
        return [{"id": node} for node in self.ids]


def _conf(tmp_path: Path, scheduler: str) -> HadoopConf:
    (tmp_path / "core-site.xml").write_text("<configuration/>")
    (tmp_path / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.scheduler.address</name>"
        f"<value>{scheduler}</value></property></configuration>")
    return HadoopConf(tmp_path)


ASKED = {UNMANAGED_AM_CONF: "true"}


def test_asked_for_with_scheduler_and_nodemanagers_reached_the_am_runs_in_the_driver(tmp_path):
    with _listening() as scheduler, _listening() as node:
        rm = _Nodes([f"127.0.0.1:{node}"])
        choice = choose_app_master(ASKED, _conf(tmp_path, f"127.0.0.1:{scheduler}"), rm, False)
    assert choice.unmanaged and rm.asked == ["RUNNING"]


@pytest.mark.parametrize("unreached", ["scheduler", "node"])
def test_what_the_gateway_cannot_reach_gives_a_container_am_and_says_why(
        tmp_path, caplog, unreached):
    closed = _closed_port()
    with _listening() as open_port:
        scheduler = closed if unreached == "scheduler" else open_port
        node = closed if unreached == "node" else open_port
        with caplog.at_level(logging.WARNING, logger="zoo_ray.app_master"):
            choice = choose_app_master(
                ASKED, _conf(tmp_path, f"127.0.0.1:{scheduler}"),
                _Nodes([f"127.0.0.1:{node}"]), False)
    assert not choice.unmanaged and f"127.0.0.1:{closed}" in choice.reason
    assert f"127.0.0.1:{closed}" in caplog.text and "in a container" in caplog.text


def test_only_a_few_nodemanagers_are_probed(tmp_path):
    closed = _closed_port()
    with _listening() as open_port:
        # Sorted by address: the three probed answer, the fourth would not.
        ids = [f"127.0.0.1:{open_port}"] * 3 + [f"127.0.0.2:{closed}"]
        choice = choose_app_master(ASKED, _conf(tmp_path, f"127.0.0.1:{open_port}"), _Nodes(ids),
                                   False)
    assert choice.unmanaged


def test_by_default_the_am_runs_in_the_driver_where_the_gateway_reaches_the_cluster(tmp_path):
    with _listening() as scheduler, _listening() as node:
        choice = choose_app_master({}, _conf(tmp_path, f"127.0.0.1:{scheduler}"),
                                   _Nodes([f"127.0.0.1:{node}"]), False)
    assert choice.unmanaged


@pytest.mark.parametrize("user_conf, secure, warned", [
    ({UNMANAGED_AM_CONF: "false"}, False, False), ({UNMANAGED_AM_CONF: " False "}, True, False),
    ({}, True, False), (ASKED, True, True)])
def test_a_container_am_when_asked_for_and_always_with_kerberos(tmp_path, caplog, user_conf,
                                                                secure, warned):
    rm = _Nodes([])
    with caplog.at_level(logging.INFO, logger="zoo_ray.app_master"):
        choice = choose_app_master(user_conf, _conf(tmp_path, f"127.0.0.1:{_closed_port()}"), rm,
                                   secure)
    assert not choice.unmanaged and rm.asked == [], "nothing probed"
    assert any(r.levelno == logging.WARNING for r in caplog.records) == warned


def test_a_value_neither_true_nor_false_is_a_typed_error(tmp_path):
    with pytest.raises(InvalidArgumentError, match="give true .* or false"):
        choose_app_master({UNMANAGED_AM_CONF: "yes"}, _conf(tmp_path, "127.0.0.1:1"),
                          _Nodes([]), False)
