"""Layered environments: an unpacked conda env or venv cut into content-addressed layers.

Runs on the gateway. :func:`plan_layers` reads the environment (never changing it) and puts
each of its files in exactly one layer:

- the **base** (link ``zoo_env``, so executors still run ``./zoo_env/bin/python``): what
  must stay at the prefix: the interpreter and all conda installed (``conda-meta/*.json``),
  files of no distribution outside site-packages (``pyvenv.cfg``, ``bin/python``), pip
  distributions with files elsewhere under the prefix (``share/``) or loading libraries
  from it, and the hook that assembles the rest (:mod:`zoo_ray.env_layer_files`);
- a **layer per large group** of pip distributions (link ``zl-<digest>``);
- the **top** (link ``zoo_env_top``): the small groups, files of no distribution in
  site-packages, and the manifest naming the layers in ``sys.path`` order.

A group is the distributions whose files cannot live apart: a path two RECORDs claim, a
regular package another distribution adds files to, a relative symlink or an ELF
``$ORIGIN`` run path into another distribution's files, a ``.pth`` line naming another
distribution's directory. A layer's digest covers the bytes it stores, so the same
distribution gives the same layer in any environment. When no layering reproduces the
single archive, the plan is a :class:`Fallback` naming why. docs/design/env-layers.md has
the reasoning.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import posixpath
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from .cache import digest
from .env_layer_files import (
    HOOK_PTH,
    ElfFacts,
    GeneratedFile,
    LayerFile,
    hook_files,
    manifest_file,
    read_entry,
)
from .envs import ENV_ALIAS
from .errors import InvalidArgumentError

__all__ = ["BASE_LINK", "TOP_LINK", "Fallback", "Layer", "LayerPlan", "plan_layers"]

logger = logging.getLogger(__name__)

#: The base layer's link: it holds ``bin/python``, so ``EXECUTOR_PYTHON`` does not change.
BASE_LINK = ENV_ALIAS
#: The top layer's link: a fixed name, so the base's hook finds the manifest.
TOP_LINK = f"{ENV_ALIAS}_top"
#: A group of distributions at least this large gets a layer of its own.
MIN_LAYER_BYTES = 1 << 20
#: At most this many such layers (the largest groups); each is one YARN resource to localize.
MAX_LAYERS = 48
_FORMAT = "zoo-ray-env-layers-1\n"  # in every digest: a new layout gives new addresses
_BASE = "<base>"  # the union-find node of what stays at the prefix


@dataclass(frozen=True)
class Layer:
    """One layer: ``role`` "base", "top" or "dist", its YARN ``link`` name, its ``digest``,
    the distributions it holds (``name==version``), its files and generated files."""

    role: str
    link: str
    digest: str
    dists: tuple[str, ...]
    files: tuple[LayerFile, ...]
    generated: tuple[GeneratedFile, ...] = ()

    @property
    def size(self) -> int:
        """Bytes of the files it stores (before compression)."""
        return (sum(f.size for f in self.files)
                + sum(len(g.text.encode()) for g in self.generated))

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "link": self.link, "digest": self.digest,
                "dists": list(self.dists), "files": [f.to_dict() for f in self.files],
                "generated": [g.to_dict() for g in self.generated]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layer:
        return cls(data["role"], data["link"], data["digest"], tuple(data["dists"]),
                   tuple(LayerFile.from_dict(f) for f in data["files"]),
                   tuple(GeneratedFile.from_dict(g) for g in data["generated"]))


@dataclass(frozen=True)
class LayerPlan:
    """The layers of the environment at ``prefix``: base, top, then the others, in the
    manifest's order. ``site_packages`` is relative to the prefix, the same in each layer."""

    prefix: str
    kind: str
    site_packages: str
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def script_dirs(self) -> list[str]:
        """The layers' ``bin`` directories, relative to the container, for ``PATH``:
        console scripts are in their distribution's layer, ``python`` in the base."""
        return [f"{layer.link}/bin" for layer in (*self.layers[1:], self.layers[0])]

    def to_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "kind": self.kind, "site_packages": self.site_packages,
                "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerPlan:
        return cls(data["prefix"], data["kind"], data["site_packages"],
                   tuple(Layer.from_dict(layer) for layer in data["layers"]))


@dataclass(frozen=True)
class Fallback:
    """Why the environment at ``prefix`` ships as one archive instead of layers."""

    prefix: str
    kind: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "kind": self.kind, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fallback:
        return cls(data["prefix"], data["kind"], tuple(data["reasons"]))


def plan_layers(prefix: Path, kind: str, *, exclude: Sequence[str] = (),
                min_layer_bytes: int = MIN_LAYER_BYTES,
                max_layers: int = MAX_LAYERS) -> LayerPlan | Fallback:
    """Cut the environment at ``prefix`` into layers, or say why it cannot be.

    Parameters
    ----------
    prefix : Path
        The environment's prefix (it holds ``bin/python``).
    kind : str
        "conda" or "venv".
    exclude : sequence of str
        ``fnmatch`` patterns of prefix-relative paths left out (as the single archive does).
    min_layer_bytes, max_layers : int
        A group of distributions of at least ``min_layer_bytes`` gets a layer of its own,
        for the ``max_layers`` largest; smaller groups go to the top layer.

    Returns
    -------
    LayerPlan or Fallback
        The layers, or the reasons to ship one archive (also logged as a warning).

    Raises
    ------
    InvalidArgumentError
        ``kind`` is neither "conda" nor "venv".
    """
    if kind not in ("conda", "venv"):
        raise InvalidArgumentError(f"kind={kind!r}: layers are planned for 'conda' or 'venv' "
                                   "environments; ship a prebuilt archive as it is.")
    prefix = Path(prefix)
    sites = sorted(p.relative_to(prefix).as_posix()
                   for p in prefix.glob("lib/python3*/site-packages"))
    if len(sites) != 1:
        return _fallback(prefix, kind, [f"{len(sites)} lib/python3*/site-packages directories "
                                        "(layers need exactly one)"])
    site_packages = sites[0]
    entries, elf = _scan(prefix, exclude)
    # An editable install's code is outside the environment: its .pth (or .egg-link) ships
    # as the single archive ships it, and the caller warns (envs.warn_editable).
    owners = _owners(prefix, kind, site_packages, entries)
    groups = _Groups(prefix, site_packages, entries)
    groups.tie_all(owners, elf)
    reasons = _pth_order(groups)
    hooks = hook_files(site_packages, TOP_LINK)
    reasons += [f"{g.path} exists already (zoo_ray writes its hook there)"
                for g in hooks if g.path in entries]
    if reasons:
        return _fallback(prefix, kind, reasons)
    return _cut(prefix, kind, site_packages, groups, hooks, min_layer_bytes, max_layers)


def _fallback(prefix: Path, kind: str, reasons: list[str]) -> Fallback:
    logger.warning("The %s environment %s ships as one archive, not in layers: %s", kind, prefix,
                   "; ".join(reasons))
    return Fallback(str(prefix), kind, tuple(reasons))


def _scan(prefix: Path, exclude: Sequence[str]) -> tuple[dict[str, LayerFile],
                                                          dict[str, ElfFacts]]:
    """Every entry under ``prefix`` but the excluded ones, in path order, and ELF facts."""
    found: list[str] = []
    for root, dirs, files in os.walk(prefix):
        rel = Path(root).relative_to(prefix).as_posix()
        base = "" if rel == "." else f"{rel}/"
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        found += [base + name for name in files + links]
        if not dirs and not files and base:
            found.append(rel)  # an empty directory
    entries: dict[str, LayerFile] = {}
    elf: dict[str, ElfFacts] = {}
    for path in sorted(found):
        if any(fnmatch(path, pattern) for pattern in exclude):
            continue
        read = read_entry(prefix, path)
        if read is None:
            logger.debug("Leaving %s/%s out of the layers: not a file, link or directory",
                         prefix, path)
            continue
        entries[path], facts = read
        if facts.runpaths:
            elf[path] = facts
    return entries, elf


def _owners(prefix: Path, kind: str, site_packages: str, entries: Mapping[str, LayerFile]
            ) -> dict[str, set[str]]:
    """Who installed each path: ``d:<name==version>`` for pip's RECORDs, the base for conda's
    ``conda-meta`` records."""
    owners: dict[str, set[str]] = defaultdict(set)
    if kind == "conda":
        for meta in sorted((prefix / "conda-meta").glob("*.json")):
            for path in json.loads(meta.read_text()).get("files", []):
                owners[path].add(_BASE)
    for record in sorted((prefix / site_packages).glob("*.dist-info/RECORD")):
        name, _, version = record.parent.name[:-len(".dist-info")].partition("-")
        for row in csv.reader(record.read_text(encoding="utf-8").splitlines()):
            path = _inside(prefix, site_packages, row[0]) if row else None
            if path is not None and path in entries:
                owners[path].add(f"d:{name}=={version}")
    return owners


def _inside(prefix: Path, site_packages: str, path: str) -> str | None:
    """``path`` (from a RECORD or a ``.pth``) relative to the prefix, None if outside it."""
    if os.path.isabs(path):
        path = os.path.relpath(path, prefix)
    else:
        path = posixpath.normpath(posixpath.join(site_packages, path))
    return None if path == ".." or path.startswith("../") else path


class _Groups:
    """Union-find over units: a unit is a top-level package (a file, when in a namespace
    directory; each file outside site-packages), tied to its owners and to what it needs."""

    def __init__(self, prefix: Path, site_packages: str, entries: Mapping[str, LayerFile]):
        self.prefix, self.site_packages, self.entries = prefix, site_packages, entries
        self.parent: dict[str, str] = {_BASE: _BASE}
        self.units = {path: self._unit(path) for path in entries}

    def find(self, node: str) -> str:
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            a, b = (a, b) if a == _BASE or (b != _BASE and a < b) else (b, a)
            self.parent[b] = a  # the base stays its group's root

    def group(self, path: str) -> str:
        return self.find(self.units[path])

    def _unit(self, path: str) -> str:
        if not path.startswith(f"{self.site_packages}/"):
            return f"u:{path}"
        parts = path[len(self.site_packages) + 1:].split("/")
        for depth in range(1, len(parts)):
            package = "/".join(parts[:depth])
            # A namespace directory (no __init__.py) may span layers: Python joins its
            # portions from every sys.path entry. Any other directory may not.
            init = f"{self.site_packages}/{package}/__init__.py"
            if not (parts[depth - 1].isidentifier() and init not in self.entries):
                return f"u:{self.site_packages}/{package}"
        return f"u:{path}"

    def tie_all(self, owners: Mapping[str, set[str]], elf: Mapping[str, ElfFacts]) -> None:
        """Tie every unit to its owners and to what it needs."""
        inside = f"{self.site_packages}/"
        for path, unit in self.units.items():
            self.find(unit)
            owned = owners.get(path, set())
            for owner in owned:
                self.union(unit, owner)
            if _pyc_source(path) in self.units:  # a bytecode cache stays with its source
                self.union(unit, self.units[_pyc_source(path)])
            elif not path.startswith(inside) and not (owned and
                                                      posixpath.dirname(path) == "bin"):
                # Found through sys.prefix (share/, include/, lib/), or no distribution's
                # (pyvenv.cfg, bin/python, activate scripts): at the prefix, in the base.
                self.union(unit, _BASE)
        for path, facts in elf.items():
            origin = posixpath.dirname(path)
            for runpath in facts.runpaths:
                if "$ORIGIN" in runpath or "${ORIGIN}" in runpath:
                    folder = posixpath.normpath(
                        runpath.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
                    for library in facts.needed:
                        self._tie(path, posixpath.join(folder, library))
        for path, entry in self.entries.items():
            if entry.kind == "link" and not os.path.isabs(entry.target):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(path),
                                                           entry.target))
                self._tie(path, target, whole=path.startswith(inside))
            elif posixpath.dirname(path) == self.site_packages and path.endswith(".pth"):
                self._tie_pth(path)

    def _tie(self, path: str, target: str, whole: bool = False) -> None:
        """Keep ``target`` (with ``whole``, everything under it) in ``path``'s layer."""
        if target in self.units:
            self.union(self.units[path], self.units[target])
        elif whole:
            for other in self._under(target):
                self.union(self.units[path], self.units[other])

    def _under(self, folder: str) -> Iterator[str]:
        # Not site-packages under a folder above it (``lib/``): those are the layers' own.
        inside = f"{self.site_packages}/"
        return (p for p in self.units if p.startswith(f"{folder}/")
                and (folder.startswith(inside) or not p.startswith(inside)))

    def _tie_pth(self, path: str) -> None:
        # A directory outside the environment (an editable install) is added as it would be
        # from the single archive: it exists on the executors only if they share the path.
        for line in _pth_paths((self.prefix / path).read_text(errors="replace")):
            target = _inside(self.prefix, self.site_packages, line)
            if target is not None:
                self._tie(path, target, whole=True)


def _pyc_source(path: str) -> str:
    folder, name = posixpath.split(path)
    if not name.endswith(".pyc") or posixpath.basename(folder) != "__pycache__":
        return ""
    return posixpath.join(posixpath.dirname(folder), name.split(".", 1)[0] + ".py")


def _pth_paths(text: str) -> Iterator[str]:
    """The directory lines of a ``.pth`` file (site's rules: not a comment, not an import)."""
    for line in text.splitlines():
        if line.strip() and not line.startswith(("#", "import ", "import\t")):
            yield line.rstrip()


def _pth_order(groups: _Groups) -> list[str]:
    """Reasons the ``.pth`` files of the layers would not run as in one site-packages.

    site runs the base's ``.pth`` files in name order, the hook's last; the hook then runs
    the other layers' in name order. That is one directory's order only if every base
    name sorts first, and the base's directory lines stay after the layers' modules only
    if it has none.
    """
    site_packages = groups.site_packages
    pths = [p for p in groups.units if posixpath.dirname(p) == site_packages
            and p.endswith(".pth")]
    base = sorted(posixpath.basename(p) for p in pths if groups.group(p) == _BASE)
    layers = sorted(posixpath.basename(p) for p in pths if groups.group(p) != _BASE)
    reasons = []
    if base and base[-1] >= HOOK_PTH:
        reasons.append(f"{base[-1]} in the base layer would run after zoo_ray's hook")
    if base and layers and base[-1] > layers[0]:
        reasons.append(f"{base[-1]} (base layer) would run before {layers[0]} (another layer)")
    folder = groups.prefix / site_packages
    if layers:
        reasons += [f"{site_packages}/{name} (base layer) adds directories ahead of the "
                     "other layers" for name in base if any(
                         (folder / line).is_dir() for line in _pth_paths(
                             (folder / name).read_text(errors="replace")))]
    return reasons


def _cut(prefix: Path, kind: str, site_packages: str, groups: _Groups,
         hooks: tuple[GeneratedFile, ...], min_layer_bytes: int, max_layers: int) -> LayerPlan:
    members: dict[str, list[LayerFile]] = defaultdict(list)
    for path, entry in groups.entries.items():
        members[groups.group(path)].append(entry)
    dists: dict[str, list[str]] = defaultdict(list)
    for node in sorted(groups.parent):
        if node.startswith("d:"):
            dists[groups.find(node)].append(node[2:])
    sizes = {group: sum(f.size for f in files) for group, files in members.items()}
    others = sorted((g for g in members if g != _BASE), key=lambda g: (-sizes[g], g))
    own = [g for g in others if sizes[g] >= min_layer_bytes][:max_layers]
    layers = sorted((_layer("dist", members[g], dists[g]) for g in own), key=lambda x: x.link)
    small = [g for g in others if g not in own]
    top = _layer("top", [f for g in small for f in members[g]],
                 [d for g in small for d in dists[g]],
                 (manifest_file([TOP_LINK, *(layer.link for layer in layers)]),))
    base = _layer("base", members[_BASE], dists[_BASE], hooks)
    plan = LayerPlan(str(prefix), kind, site_packages, (base, top, *layers))
    logger.info("The %s environment %s in %d layers: base %d bytes (%s), top %d bytes "
                "(%d distributions), %d more of %d bytes", kind, prefix, len(plan.layers),
                base.size, ", ".join(base.dists) or "no pip distribution", top.size,
                len(top.dists), len(layers), sum(layer.size for layer in layers))
    return plan


def _layer(role: str, files: list[LayerFile], dists: list[str],
           generated: tuple[GeneratedFile, ...] = ()) -> Layer:
    files = sorted(files, key=lambda f: f.path)
    address = digest(_FORMAT, role, "\n", *(f.identity() for f in files),
                     *(g.identity() for g in generated))
    link = {"base": BASE_LINK, "top": TOP_LINK}.get(role, f"zl-{address}")
    return Layer(role, link, address, tuple(sorted(dists)), tuple(files), generated)
