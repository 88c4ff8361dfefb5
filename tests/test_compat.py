"""Analytics Zoo's spellings: each renamed one warns and works, each refused one says why."""
from __future__ import annotations

import re
import warnings

import pytest
from tests.spark_stub import StubSparkContext

from zoo_ray.compat import (
    INIT_NAMES,
    LOCAL_NAMES,
    RAY_CONTEXT_NAMES,
    YARN_NAMES,
    Refused,
    Renamed,
    translate,
)
from zoo_ray.context import RayContext
from zoo_ray.errors import InvalidArgumentError
from zoo_ray.options import _local_cores


@pytest.mark.parametrize("old, new", [(old, rule.new) for old, rule in YARN_NAMES.items()
                                      if isinstance(rule, Renamed)])
def test_renamed_yarn_arguments_warn_and_map(old, new):
    with pytest.warns(DeprecationWarning, match=f"{old}=.*Analytics Zoo.*use {new}="):
        assert translate("init_spark_on_yarn", {old: 3}, YARN_NAMES, {}) == {new: 3}


def test_both_spellings_at_once_is_an_error():
    with pytest.raises(InvalidArgumentError, match="both spark_conf .* and conf; pass only conf"):
        translate("init_spark_on_yarn", {"spark_conf": {"a": "1"}}, YARN_NAMES,
                  {"conf": {"b": "2"}})


@pytest.mark.parametrize("table, function", [
    (YARN_NAMES, "init_spark_on_yarn"), (LOCAL_NAMES, "init_spark_on_local"),
    (RAY_CONTEXT_NAMES, "RayContext"), (INIT_NAMES, "RayContext.init")])
def test_every_refused_name_is_a_typed_error_saying_what_replaces_it(table, function):
    for old, rule in table.items():
        if isinstance(rule, Refused):
            with pytest.raises(InvalidArgumentError) as refused:
                translate(function, {old: 1}, table, {})
            assert str(refused.value).startswith(f"{function}({old}=...): ")
            assert rule.why in str(refused.value)


def test_unknown_names_are_still_errors():
    with pytest.raises(InvalidArgumentError, match="unexpected keyword argument 'num_exector'"):
        translate("init_spark_on_yarn", {"num_exector": 2}, YARN_NAMES, {})


def test_init_spark_on_yarn_refuses_zoo_names_before_touching_anything():
    from zoo_ray import init_spark_on_yarn

    with pytest.raises(InvalidArgumentError, match="redirect_spark_log"):
        init_spark_on_yarn(hadoop_conf="/nonexistent", redirect_spark_log=True)


@pytest.fixture
def no_active_context():
    yield
    RayContext._active = None


def test_ray_context_refuses_redis_names_and_answers_zoo_members(no_active_context):
    sc = StubSparkContext(**{"spark.master": "yarn"})
    for name in ("redis_port", "password", "redis_password", "local_ray_node_num"):
        with pytest.raises(InvalidArgumentError, match=f"RayContext\\({name}="):
            RayContext(sc, **{name: 1})
    ctx = RayContext(sc, ray_node_cpu_cores=3)
    assert ctx.total_cores == 2 * 3 and ctx.is_local is False
    with pytest.warns(DeprecationWarning, match="redis_address.*use RayContext.address"):
        assert ctx.redis_address is None
    with pytest.warns(DeprecationWarning, match="stopped.*use not RayContext.initialized"):
        assert ctx.stopped is True
    with pytest.warns(DeprecationWarning, match="purge.*use RayContext.stop"):
        ctx.purge()  # not running: nothing to stop
    with pytest.raises(InvalidArgumentError, match="init\\(num_cores=...\\).*driver_cores"):
        ctx.init(num_cores=2)


def test_local_mode_takes_its_cores_from_the_master(no_active_context):
    assert [_local_cores(m) for m in ("local", "local[4]", "local[4,2]")] == [1, 4, 4]
    assert _local_cores("local[*]") >= 1
    ctx = RayContext(StubSparkContext(**{"spark.master": "local[6]"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ctx.is_local and ctx.ray_node_cpu_cores == 6 and ctx.num_ray_nodes == 1


@pytest.mark.parametrize("module, name", [
    ("zoo_ray.common.nncontext", "init_spark_on_yarn"),
    ("zoo_ray.common.nncontext", "init_spark_on_local"),
    ("zoo_ray.ray", "RayContext"),
    ("zoo_ray.ray.raycontext", "RayContext"),
    ("zoo_ray.ray.util.raycontext", "RayContext"),
])
def test_zoo_import_paths_give_zoo_rays_names_with_a_warning(module, name):
    import importlib

    import zoo_ray

    with pytest.warns(DeprecationWarning, match=f"use `from zoo_ray import {name}`"):
        found = getattr(importlib.import_module(module), name)
    assert found is getattr(zoo_ray, name)
    with pytest.raises(AttributeError):
        importlib.import_module(module).init_nncontext  # noqa: B018


@pytest.mark.parametrize("key, says", [
    ("--num-cpus", "ray_node_cpu_cores"), ("object_store_memory", "object_store_memory"),
    ("port", "picks every node's address and ports"),
    ("dashboard-port", "picks every node's address and ports"),
    ("node-ip-address", "picks every node's address and ports"),
])
def test_extra_params_zoo_ray_sets_itself_are_refused_naming_the_replacement(
        key, says, no_active_context):
    with pytest.raises(InvalidArgumentError, match=f"extra_params=.*{says}"):
        RayContext(StubSparkContext(), extra_params={key: "x"})
    ctx = RayContext(StubSparkContext(), extra_params={"resources": '{"ssd": 1}'})
    assert ctx.options.extra_params == {"resources": '{"ssd": 1}'}


@pytest.mark.parametrize("key", ["temp-dir", "temp_dir", "--temp-dir"])
def test_zoo_s_temp_dir_in_extra_params_is_the_nodes_root(key, no_active_context, tmp_path):
    ctx = RayContext(StubSparkContext(), extra_params={key: str(tmp_path), "resources": "{}"})
    assert (ctx.options.temp_root, ctx.options.spill_root) == (str(tmp_path), None)
    assert ctx.options.extra_params == {"resources": "{}"}
    spec = ctx.options.base_spec("application_1_0001", "t" * 43)
    assert (spec.temp_root, spec.spill_root) == (str(tmp_path), None)
    spill = RayContext(StubSparkContext(), temp_dir=str(tmp_path),
                       extra_params={"object-spilling-directory": "/spill"}).options
    assert (spill.temp_root, spill.spill_root, spill.extra_params) == (str(tmp_path), "/spill", {})


@pytest.mark.parametrize("kwargs, says", [
    ({"temp_dir": "relative/dir"}, "temp_dir='relative/dir' must be an absolute path"),
    ({"extra_params": {"temp-dir": "tmp/hello"}}, "temp_dir='tmp/hello' must be an absolute"),
    ({"extra_params": {"object-spilling-directory": "spill"}},
     "object-spilling-directory='spill' must be an absolute path"),
    ({"temp_dir": "/a", "extra_params": {"temp-dir": "/b"}}, "differ; pass one of them"),
])
def test_a_root_that_cannot_be_one_is_refused_naming_the_fix(kwargs, says, no_active_context):
    with pytest.raises(InvalidArgumentError, match=re.escape(says)):
        RayContext(StubSparkContext(), **kwargs)
