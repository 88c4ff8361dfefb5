"""How a lost executor is explained to the user (no cluster: Spark's and YARN's words)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from zoo_ray.losses import explain, parse_loss, read_memory_sample, served_sample
from zoo_ray.protocol import ContainerMemory

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


def test_a_sampled_usage_says_where_it_comes_from():
    reason = "Container killed by YARN for exceeding physical memory limits."
    loss = replace(parse_loss("2", "hostA", reason, "container_9", "1920 MB"),
                   memory_used="2253 MB", sampled_at=1000.0, lost_at=1002.4)
    text = explain(loss, SIZES)
    assert "2253 MB in its processes at zoo_ray's last sample, taken 2s before" in text
    assert "against its 1920 MB limit" in text


#: How a NodeManager (Hadoop 3.5) serves one file of a finished container's log directory.
SERVED = ("Container: container_1_0001_01_000002 on localhost_34567\n"
          "LogAggregationType: LOCAL\n"
          "====================================================================\n"
          "LogType:zoo_ray_memory.json\nLogLastModifiedTime:Mon Nov 30 05:15:50 +0000 2026\n"
          "LogLength:66\nLogContents:\n"
          '{"rss_bytes": 2362232012, "processes": 17, "sampled_at": 1796015750.25}'
          "End of LogType:zoo_ray_memory.json.\n****\n\n")


def test_the_sample_is_read_out_of_the_node_manager_s_framing():
    assert served_sample(SERVED) == ContainerMemory(2362232012, 17, 1796015750.25)
    with pytest.raises(ValueError):
        served_sample("LogType:zoo_ray_memory.json\nLogContents:\nEnd of LogType")


def test_no_log_url_or_an_unreachable_node_manager_gives_no_sample():
    assert read_memory_sample({}) is None
    assert read_memory_sample({"stderr": "not a url"}) is None
    # A closed port on loopback: refused at once, no figure rather than an error.
    closed = "http://127.0.0.1:9/node/containerlogs/container_1_0001_01_000002/u/stderr"
    assert read_memory_sample({"stderr": closed}) is None


def test_a_node_manager_answering_garbage_gives_no_sample_and_no_error():
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_tls_bytes():
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"\x15\x03\x03\x00\x02\x02\x50")  # a TLS alert, not HTTP

    thread = threading.Thread(target=answer_tls_bytes, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/node/containerlogs/container_1_0001_01_000002/u/stderr"
    try:
        assert read_memory_sample({"stderr": url}) is None
    finally:
        thread.join(10)
        server.close()
