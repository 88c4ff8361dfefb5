"""Memory strings and executor sizing."""
from __future__ import annotations

import pytest

from zoo_ray.errors import InvalidMemoryError
from zoo_ray.memory import container_mib, executor_memory, format_mib, parse_memory

MiB, GiB = 2**20, 2**30


@pytest.mark.parametrize("text, expected", [
    ("512m", 512 * MiB), ("2g", 2 * GiB), ("1.5g", int(1.5 * GiB)), ("2G", 2 * GiB),
    ("2gb", 2 * GiB), ("2GiB", 2 * GiB), (" 64k ", 64 * 2**10), ("1t", 2**40), (4096, 4096),
])
def test_valid_memory_strings(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["2gg", "-1g", "1.5.5g", "", "g", "1024", "0m", "two g",
                                  "1e3m", 0, -5, True, 1.5, None])
def test_invalid_memory_strings_name_the_argument_and_the_fix(text):
    with pytest.raises(InvalidMemoryError, match=r"object_store_memory=.*(\"512m\"|zero)"):
        parse_memory(text, "object_store_memory")


def test_invalid_memory_is_also_a_value_error():
    with pytest.raises(ValueError):
        parse_memory("2gg")


def test_format_rounds_up_to_whole_mib():
    assert format_mib(512 * MiB) == "512m"
    assert format_mib(512 * MiB + 1) == "513m"


def test_ray_memory_is_added_to_the_users_overhead_not_put_in_its_place():
    sizing = executor_memory("2g", "3g", {"spark.executor.memoryOverhead": "1g"})
    assert sizing.user_overhead == GiB
    assert sizing.overhead == 4 * GiB
    assert sizing.container == 6 * GiB


def test_bare_user_overhead_is_mib_like_spark_reads_it():
    assert executor_memory("1g", "1g", {"spark.executor.memoryOverhead": "512"}).overhead == (
        512 * MiB + GiB)


def test_without_user_overhead_sparks_default_is_kept():
    assert executor_memory("1g").overhead == 384 * MiB
    assert executor_memory("10g", "1g").overhead == GiB + GiB


def test_an_executor_s_container_from_the_spark_conf():
    conf = {"spark.executor.memory": "512m", "spark.executor.memoryOverhead": "1408m"}
    assert container_mib(conf) == 1920
    assert container_mib({"spark.executor.memory": "2048",  # bare: MiB, as Spark reads it
                          "spark.executor.memoryOverhead": "1024"}) == 3072
    assert container_mib({"spark.executor.memory": "1g"}) is None, "Spark's default overhead"
    assert container_mib({"spark.executor.memoryOverhead": "lots"}) is None
