"""How a RayContext shows itself in a terminal and in Jupyter (runs on the driver).

:class:`ClusterView` is a plain snapshot (the YARN application, its links, one
:class:`NodeRow` per Ray node); :func:`render_text` and :func:`render_html` are pure
functions of it, so what users see is tested without a cluster.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

__all__ = ["ClusterView", "NodeRow", "render_html", "render_text"]

_HEADERS = ("role", "host", "executor", "CPUs", "GPUs", "object store", "alive")


@dataclass(frozen=True)
class NodeRow:
    """One Ray node as the display lists it."""

    role: str
    host: str
    executor: str
    cpus: float | None
    gpus: float | None
    object_store_bytes: int | None
    alive: bool | None

    def cells(self) -> tuple[str, ...]:
        cpus = "?" if self.cpus is None else f"{self.cpus:g}"
        gpus = "?" if self.gpus is None else f"{self.gpus:g}"
        store = ("?" if self.object_store_bytes is None
                 else f"{self.object_store_bytes / 2**20:.0f} MiB")
        alive = {True: "yes", False: "LOST", None: "?"}[self.alive]
        return (self.role, self.host, self.executor or "-", cpus, gpus, store, alive)


@dataclass(frozen=True)
class ClusterView:
    """A RayContext at one moment: its application, links and nodes."""

    state: str
    app_id: str
    app_state: str
    head: str | None
    yarn_url: str | None
    spark_url: str | None
    dashboard_url: str | None
    nodes: tuple[NodeRow, ...]
    #: An elastic cluster's range, what it asked of YARN and what waits ("" if fixed).
    scaling: str = ""


def _links(view: ClusterView) -> list[tuple[str, str]]:
    return [(name, url) for name, url in (("YARN application", view.yarn_url),
                                          ("Spark UI", view.spark_url),
                                          ("Ray dashboard", view.dashboard_url)) if url]


def render_text(view: ClusterView) -> str:
    """A few aligned lines for terminals and logs."""
    lines = [f"RayContext {view.state}: application {view.app_id or '-'} ({view.app_state}), "
             f"head {view.head or '-'}"]
    lines += [f"  {name}: {url}" for name, url in _links(view)]
    if view.scaling:
        lines.append(f"  {view.scaling}")
    if view.nodes:
        rows = [_HEADERS] + [node.cells() for node in view.nodes]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                  for row in rows]
    return "\n".join(lines)


def render_html(view: ClusterView) -> str:
    """A compact HTML card for Jupyter: state, links, and a table of nodes."""
    esc = html.escape
    links = " · ".join(f'<a href="{esc(url)}" target="_blank">{esc(name)}</a>'
                       for name, url in _links(view))
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in _HEADERS)
    body = "".join(
        "<tr>" + "".join(
            f"<td style='text-align:left{';color:#c00;font-weight:bold' if c == 'LOST' else ''}'>"
            f"{esc(c)}</td>" for c in node.cells()) + "</tr>"
        for node in view.nodes)
    return (f"<div><b>RayContext</b> {esc(view.state)} · application "
            f"<code>{esc(view.app_id or '-')}</code> ({esc(view.app_state)}) · head "
            f"<code>{esc(view.head or '-')}</code><br>{links}"
            + (f"<br>{esc(view.scaling)}" if view.scaling else "")
            + f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
