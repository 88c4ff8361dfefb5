"""Sphinx roles in the docstrings become checked cross-references.

Runs at docs build time only: a griffe extension that mkdocs.yml gives mkdocstrings' Python
handler (``extensions:``); zoo_ray never imports it.

The numpydoc docstrings name objects with Sphinx roles: ``:func:`node_table```,
``:class:`~zoo_ray.errors.ClusterLostError```, ``:meth:`title <zoo_ray.nodes.ClusterNodes.start>```.
Once griffe has loaded the package, this rewrites each role; ``~`` shows only the target's
last name. A role whose target is

- an object of the package becomes an autorefs cross-reference to its entry in the docs. Most
  objects have no entry of their own (the architecture page renders each module's docstring
  only), so the link falls back to the entry of the object's module: autorefs tries the
  ``identifier`` of an ``<autoref>`` first and then its ``slug`` (mkdocs-autorefs 1.4.5);
- outside the package (``functools.partial``, ``ray.get``, ``ValueError``) is code without a
  link (see ``_resolve``);
- neither is a warning naming the file, the docstring and the role, and ``--strict`` fails.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from functools import partial
from importlib.util import find_spec
from typing import Any

from griffe import Alias, AliasResolutionError, Extension, Module, Object, logger

# A Python-domain role: :func:`name`, :func:`~name`, :func:`title <name>`.
ROLE = re.compile(r":(?:mod|func|data|const|class|meth|attr|type|exc|obj):`(?P<text>[^`]+)`")
EXPLICIT_TITLE = re.compile(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>")


class SphinxRoles(Extension):
    """Rewrites the roles in every docstring of a package once griffe has loaded it."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(
                    partial(_reference, obj, obj.docstring.lineno or 0), obj.docstring.value
                )


def _objects(obj: Object) -> Iterator[Object]:
    """``obj`` and every object defined in it (not the names it imports)."""
    yield obj
    for member in obj.members.values():
        if isinstance(member, Object):
            yield from _objects(member)


def _reference(owner: Object, lineno: int, role: re.Match[str]) -> str:
    """The Markdown for one role in ``owner``'s docstring, which starts on line ``lineno``."""
    text = role["text"]
    explicit = EXPLICIT_TITLE.fullmatch(text)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        title, target = text.lstrip("."), text.lstrip("~")
        if title.startswith("~"):
            title = title[1:].rsplit(".", 1)[-1]
    try:
        found = _resolve(owner, target)
    except LookupError:
        logger.warning(
            "%s:%d: %s: %s names nothing in %s",
            owner.relative_filepath,
            lineno + role.string.count("\n", 0, role.start()),
            owner.path,
            role[0],
            owner.package.name,
        )
        found = None
    if found is None:
        return f"`{title}`"
    return f'<autoref identifier="{found.path}" slug="{found.module.path}">`{title}`</autoref>'


def _resolve(owner: Object, target: str) -> Object | None:
    """The object ``target`` denotes in ``owner``'s docstring; None if it is outside the package.

    Looked up as Sphinx does, in ``owner``, its class and its module, then as a full name.
    Failing that, a target whose first name is a builtin or an installed module (``ray.get``:
    the docs are built in the project's venv) is outside, unless it starts with ``.``; a name
    imported from outside the package is too. Only then the packages above the module are
    looked in (``zoo_ray.ray`` must not take ``ray.get``). Raises LookupError if it is none
    of these.
    """
    names = target.lstrip(".").split(".")
    package = owner.package
    scopes = [owner]
    while scopes[-1].parent is not None:
        scopes.append(scopes[-1].parent)
    own = scopes.index(owner.module) + 1
    inner = [(scope, names) for scope in scopes[:own]]
    if names[0] == package.name:
        inner.append((package, names[1:]))
    outer = [(scope, names) for scope in scopes[own:]]
    try:
        found = _first(inner)
        if found is not None:
            return found
        if not target.startswith(".") and names[0] != package.name and (
            hasattr(builtins, names[0]) or find_spec(names[0]) is not None
        ):
            return None
        found = _first(outer)
    except AliasResolutionError:  # a name imported from outside the package
        return None
    if found is None:
        raise LookupError(target)
    return found


def _first(lookups: list[tuple[Object, list[str]]]) -> Object | None:
    """The first object found by ``(scope, path)`` in ``lookups``, or None."""
    for scope, path in lookups:
        found = _member(scope, path)
        if found is not None:
            return found
    return None


def _member(obj: Object | Alias, path: list[str]) -> Object | None:
    """The member of ``obj`` at ``path``, imports followed; None if there is none."""
    for name in path:
        member = obj.members.get(name)
        if member is None:
            return None
        obj = member
    return obj.final_target if isinstance(obj, Alias) else obj
