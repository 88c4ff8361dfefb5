"""The notebooks in the repository are valid and carry no outputs (they are run in CI)."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_is_valid_and_stripped(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, "a notebook with code"
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "HADOOP_CONF_DIR" in "".join(c.source for c in code), "settings from the environment"
