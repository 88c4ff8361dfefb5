"""The notebooks in ``notebooks/``, executed cell by cell by a real Jupyter kernel on the
local Hadoop, with their settings taken from the environment as on a real gateway. They
run at once (``ahead``), each its own application, as several users' would."""
from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import NOTEBOOK_DIR, notebook_problems, program_env, run_notebook

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _run(path: Path, cluster: Any, tmp: Path, _cleanup: ExitStack) -> tuple[Any, float]:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    seconds = run_notebook(notebook, tmp, program_env(cluster))
    # Kept with the test's temp files: what a user would see, to render and look at.
    nbformat.write(notebook, tmp / path.name)
    return notebook, seconds


AHEAD = {f"test_notebook_runs_end_to_end[{path.stem}]": partial(_run, path)
         for path in NOTEBOOKS}


def test_there_are_notebooks_to_run():
    assert [n.name[:2] for n in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_end_to_end(path, ahead_result, capsys):
    notebook, seconds = ahead_result
    with capsys.disabled():
        print(f"\n{path.name}: {seconds:.1f}s (the notebooks run at once)")
    assert notebook_problems(notebook) == []
