"""Progress bars for long steps (packing, uploading), in a terminal and in Jupyter.

Runs on the gateway, in the driver's process.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["interactive", "progress_bar"]


def interactive() -> bool:
    """Whether progress should be shown: in Jupyter, or with a terminal on stderr."""
    # Jupyter's stderr is not a TTY, yet it renders bars; a CI log should not get them.
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def progress_bar(total: int, label: str) -> Any:
    """A byte-counting bar (a context manager with ``update(n)``); silent when not interactive."""
    return tqdm(
        total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not interactive(), leave=False,
    )
