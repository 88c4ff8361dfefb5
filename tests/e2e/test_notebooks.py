"""The notebooks in ``notebooks/``, executed cell by cell by a real Jupyter kernel on the
local Hadoop, with their settings taken from the environment as on a real gateway."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.fresh import ray_keys

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_to_run():
    assert [n.name[:2] for n in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_end_to_end(path, cluster, tmp_path, monkeypatch, capsys):
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment: no Ray session of the test process leaks in.
    for key in ray_keys():
        monkeypatch.delenv(key)
    monkeypatch.setenv("HADOOP_CONF_DIR", str(cluster.hadoop_conf_dir))
    notebook = nbformat.read(path, as_version=4)
    started = time.monotonic()
    # A failing cell raises CellExecutionError, naming the cell and its traceback.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    with capsys.disabled():
        print(f"\n{path.name}: {time.monotonic() - started:.1f}s")
    # Kept with the test's temp files: what a user would see, to render and look at.
    nbformat.write(notebook, tmp_path / path.name)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
