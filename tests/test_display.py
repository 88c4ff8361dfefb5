"""What a RayContext shows in a terminal and in Jupyter, from a snapshot (no cluster)."""
from __future__ import annotations

from zoo_ray.display import ClusterView, NodeRow, render_html, render_text


def _view(**overrides):
    base = dict(
        state="running", app_id="application_1_0007", app_state="RUNNING",
        head="198.18.0.11:6379", yarn_url="http://rm:8088/cluster/app/application_1_0007",
        spark_url="http://rm:8088/proxy/application_1_0007/", dashboard_url=None,
        nodes=(NodeRow("head", "198.18.0.11", "1 (container_1)", 4.0, 1.0, 2**30, True),
               NodeRow("worker", "198.18.0.12", "2 (container_2)", 4.0, 0.0, 2**30, False),
               NodeRow("driver", "198.18.0.1", "", 0.0, 0.0, 256 * 2**20, True)))
    return ClusterView(**{**base, **overrides})


def test_text_names_the_application_its_links_and_one_aligned_line_per_node():
    lines = render_text(_view()).splitlines()
    assert lines[0] == ("RayContext running: application application_1_0007 (RUNNING), "
                        "head 198.18.0.11:6379")
    assert "  YARN application: http://rm:8088/cluster/app/application_1_0007" in lines
    assert not any("Ray dashboard" in line for line in lines)
    table = lines[3:]
    assert table[0].split() == ["role", "host", "executor", "CPUs", "GPUs", "object", "store",
                                "alive"]
    assert table[2].split()[-1] == "LOST" and table[3].split()[2] == "-"
    assert [line.split()[-4] for line in table[1:]] == ["1", "0", "0"], "GPUs per node"
    assert len({line.index("198.18") for line in table[1:]}) == 1, "columns line up"


def test_html_links_every_page_escapes_values_and_marks_lost_nodes():
    page = render_html(_view(dashboard_url="http://198.18.0.11:8265",
                             app_id="<app&>"))
    assert '<a href="http://rm:8088/proxy/application_1_0007/" target="_blank">Spark UI</a>' in page
    assert "Ray dashboard" in page and "&lt;app&amp;&gt;" in page and "<app&>" not in page
    assert page.count("<tr>") == 4 and "color:#c00;font-weight:bold'>LOST" in page


def test_a_stopped_context_shows_no_links_and_unknown_nodes():
    view = _view(state="stopped", app_state="stopped", yarn_url=None, spark_url=None, nodes=(
        NodeRow("head", "198.18.0.11", "container_1", None, None, None, None),))
    text = render_text(view)
    assert "http" not in text and text.splitlines()[-1].split()[-4:] == ["?", "?", "?", "?"]
