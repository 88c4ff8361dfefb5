"""How a lost executor is explained to the user (no cluster: Spark's and YARN's words)."""
from __future__ import annotations

from zoo_ray.losses import explain, parse_loss

#: Spark 4's reason for a container YARN killed for physical memory.
SPARK_PMEM = ("Container killed by YARN for exceeding physical memory limits. 2.1 GB of 1.9 GB "
              "physical memory used. Consider boosting spark.executor.memoryOverhead or "
              "disabling yarn.nodemanager.pmem-check-enabled because of YARN-4714.")
#: The NodeManager's own diagnostics, should they reach the driver unchanged.
NM_PMEM = ("Container [pid=4242,containerID=container_1_0001_01_000003] is running 236MB beyond "
           "the 'PHYSICAL' memory limit. Current usage: 2.1 GB of 1.9 GB physical memory used; "
           "4.5 GB of 4.0 GB virtual memory used. Killing container.")
SIZES = {"executor_memory": "512m", "extra_executor_memory_for_ray": "1024m",
         "object_store_memory": "128m"}


def test_a_memory_kill_is_recognised_in_spark_and_yarn_words():
    for reason in (SPARK_PMEM, NM_PMEM):
        loss = parse_loss("2", "198.18.0.12", reason, "container_1_0001_01_000003")
        assert loss.killed_for_memory
        assert (loss.memory_used, loss.memory_limit) == ("2.1 GB", "1.9 GB")


def test_the_message_names_executor_limit_usage_and_every_parameter_to_change():
    text = explain(parse_loss("2", "hostA", SPARK_PMEM, "container_9"), SIZES)
    assert text.startswith("Executor 2 (container_9 on hostA) was killed by YARN")
    assert "2.1 GB of its 1.9 GB limit" in text
    for setting in ("executor_memory=512m", "extra_executor_memory_for_ray=1024m",
                    "object_store_memory=128m", "@ray.remote(memory=...)"):
        assert setting in text


def test_a_memory_kill_without_yarn_s_figures_quotes_the_container_size():
    # What Spark 4 passed on from the local Hadoop 3.5: the kill, without the usage.
    reason = ("Container killed by YARN for exceeding physical memory limits.  Consider "
              "boosting spark.executor.memoryOverhead.")
    loss = parse_loss("2", "hostA", reason, "container_9", "1920 MB")
    assert loss.killed_for_memory and loss.memory_used is None
    assert loss.memory_limit == "1920 MB"
    assert "using too much memory: more than its 1920 MB limit" in explain(loss, SIZES)


def test_other_losses_say_what_spark_said():
    loss = parse_loss("3", "hostB", "Container container_7 was preempted.", "", "1920 MB")
    assert not loss.killed_for_memory and loss.memory_limit is None
    assert explain(loss, SIZES) == ("Executor 3 (no Ray node on hostB) was lost: Container "
                                    "container_7 was preempted. Its Ray node is gone.")
