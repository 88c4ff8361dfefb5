"""The notebooks in the repository are valid and carry no outputs (they are run in CI), and
the quickstart keeps the claim its run proves."""
from __future__ import annotations

import ast
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


def _imported(source: str) -> set[str]:
    """The top-level packages a cell imports (IPython's magics and shell lines left out)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    names = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_quickstart_imports_ray_before_zoo_ray():
    """A program that imports ray first and starts zoo_ray after, in a real kernel: the
    end-to-end run of 01_quickstart (tests/e2e/test_notebooks.py) proves it works as long
    as the notebook is written so."""
    import nbformat

    notebook = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert NOTEBOOKS[0].name == "01_quickstart.ipynb"
    cells = [c.source for c in notebook.cells if c.cell_type == "code"]
    imports = [_imported(source) for source in cells]
    assert "ray" in imports[0], "the first code cell imports ray"
    assert "zoo_ray" not in imports[0] and any("zoo_ray" in names for names in imports[1:])
    later = "\n".join(cells[1:])
    assert "init_spark_on_yarn(" in later and ".init()" in later, "zoo_ray starts after"
