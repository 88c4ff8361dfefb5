"""When progress bars are drawn, and which kind (pure logic: no cluster)."""
from __future__ import annotations

import sys
import types

import pytest
from tqdm import notebook
from tqdm.std import tqdm as text_tqdm

from zoo_ray import progress


class _Shell:
    def __init__(self, kernel: object | None) -> None:
        self.kernel = kernel


def _ipython(monkeypatch: pytest.MonkeyPatch, shell: _Shell | None) -> None:
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)


def test_a_process_that_only_imported_ipykernel_is_not_a_notebook(monkeypatch):
    # A test runner driving notebooks imports ipykernel; its own logs must stay clean.
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    _ipython(monkeypatch, None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not progress.interactive()
    with progress.count_bar(3, "nodes", "node") as shown:
        assert shown.disable


def test_an_ipython_terminal_without_a_kernel_is_not_a_notebook(monkeypatch):
    _ipython(monkeypatch, _Shell(kernel=None))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not progress.interactive()


def test_a_kernel_draws_widget_bars_when_ipywidgets_is_installed(monkeypatch):
    pytest.importorskip("ipywidgets")
    _ipython(monkeypatch, _Shell(kernel=object()))
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: object())
    made = {}
    monkeypatch.setattr(notebook, "tqdm", lambda **kw: made.setdefault("widget", kw))
    progress.count_bar(2, "executors", "executor")
    assert made["widget"]["disable"] is False and made["widget"]["total"] == 2


def test_a_kernel_without_ipywidgets_draws_text_bars(monkeypatch):
    _ipython(monkeypatch, _Shell(kernel=object()))
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
    with progress.progress_bar(10, "upload") as shown:
        assert type(shown) is text_tqdm and not shown.disable
