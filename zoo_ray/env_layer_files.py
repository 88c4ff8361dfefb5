"""What one layer of an environment holds, how its archive is written, and how it is assembled.

On the gateway: the bytes a layer stores for a file of the environment (what venv-pack and
conda-pack would store, with bytecode caches stamped for the archive's fixed mtime), the
ELF facts planning needs (run paths and needed libraries), and the deterministic
``tar.gz`` of one layer (:func:`write_layer`). On the executor: the hook written into the
base layer (:func:`hook_files`), which runs in every interpreter the assembled environment
starts and puts the other layers' site-packages on ``sys.path`` from the manifest in the
top layer (:func:`manifest_file`). :mod:`zoo_ray.env_layers` plans which files go where.
"""
from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import struct
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import EnvLayerError

if TYPE_CHECKING:
    from .env_layers import Layer

__all__ = ["FIXED_MTIME", "HOOK_PTH", "MANIFEST", "GeneratedFile", "LayerFile", "ElfFacts",
           "elf_facts", "hook_files", "manifest_file", "read_entry", "stored_bytes", "write_layer"]

#: Every member of a layer's archive has this mtime (1980-01-01), so equal content gives
#: equal bytes; bytecode caches are stamped with it so they stay valid for their sources.
FIXED_MTIME = 315532800
#: The hook's ``.pth`` sorts after every usual name: the base's own ``.pth`` files run first.
HOOK_PTH = "zzzz_zoo_ray_env_layers.pth"
HOOK_MODULE = "_zoo_ray_env_layers"
#: In the top layer: the link names of the layers, in ``sys.path`` order.
MANIFEST = "zoo_ray_env_layers.json"
_COMPRESS_LEVEL = 1  # as for the single archive: packing speed over the last few % of size
_CHUNK = 1 << 20
# venv-pack's and conda-pack's: the interpreter of a `#!` line and what follows it.
_SHEBANG = re.compile(rb"#![ ]*(/(?:\\ |[^ \n\r\t])*)(.*)$", re.MULTILINE)
_DT_NEEDED, _DT_RPATH, _DT_RUNPATH, _SHT_DYNAMIC = 1, 15, 29, 6

_HOOK_SOURCE = '''\
"""Written by zoo_ray (zoo_ray.env_layer_files): puts this environment's layers on sys.path."""
import json
import os
import site
import sys


def _assemble():
    base = os.path.dirname(os.path.abspath(__file__))
    for _ in {site_packages!r}.split("/"):
        base = os.path.dirname(base)
    root = os.path.dirname(base)
    try:
        with open(os.path.join(root, {top!r}, {manifest!r})) as file:
            links = json.load(file)["layers"]
    except FileNotFoundError:
        return  # the base layer on its own
    dirs = [os.path.join(root, link, {site_packages!r}) for link in links]
    for path in dirs:
        if path not in sys.path:
            sys.path.append(path)
    # The layers' .pth files in one sorted pass, as if in one site-packages directory.
    names = sorted((name, path) for path in dirs for name in os.listdir(path)
                   if name.endswith(".pth") and not name.startswith("."))
    for name, path in names:
        site.addpackage(path, name, None)


_assemble()
'''


@dataclass(frozen=True)
class LayerFile:
    """One entry of a layer, at ``path`` (relative to the prefix, "/"-separated).

    ``kind`` is "file", "link" (``target`` is the link's) or "dir" (an empty directory).
    ``sha256`` is the hash of the bytes the layer stores (:func:`stored_bytes`); empty for
    a bytecode cache, whose bytes follow from its source (the path embedded in them differs
    between environments).
    """

    path: str
    kind: str
    size: int = 0
    sha256: str = ""
    executable: bool = False
    target: str = ""

    def identity(self) -> str:
        """The line of this entry in its layer's digest."""
        return f"{self.path}\0{self.kind}\0{int(self.executable)}\0{self.sha256}\0{self.target}\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerFile:
        return cls(**data)


@dataclass(frozen=True)
class GeneratedFile:
    """A file zoo_ray writes into a layer (the hook, the manifest): ``path`` and its text."""

    path: str
    text: str

    def identity(self) -> str:
        return f"{self.path}\0generated\0{hashlib.sha256(self.text.encode()).hexdigest()}\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratedFile:
        return cls(**data)


@dataclass(frozen=True)
class ElfFacts:
    """What the dynamic loader reads of an ELF file: its needed libraries and run paths."""

    needed: tuple[str, ...] = ()
    runpaths: tuple[str, ...] = ()


def hook_files(site_packages: str, top_link: str) -> tuple[GeneratedFile, GeneratedFile]:
    """The base layer's hook: a module and the ``.pth`` line that imports it.

    Parameters
    ----------
    site_packages : str
        The site-packages directory relative to the prefix (``lib/python3.11/site-packages``),
        the same in every layer.
    top_link : str
        The link name of the top layer, which holds the manifest.
    """
    source = _HOOK_SOURCE.format(site_packages=site_packages, top=top_link, manifest=MANIFEST)
    return (GeneratedFile(f"{site_packages}/{HOOK_MODULE}.py", source),
            GeneratedFile(f"{site_packages}/{HOOK_PTH}", f"import {HOOK_MODULE}\n"))


def manifest_file(links: Sequence[str]) -> GeneratedFile:
    """The top layer's manifest: the layers' link names in ``sys.path`` order (after the base)."""
    return GeneratedFile(MANIFEST, json.dumps({"layers": list(links)}, indent=1) + "\n")


def read_entry(prefix: Path, path: str) -> tuple[LayerFile, ElfFacts] | None:
    """The layer entry of ``path`` (relative to ``prefix``), and its ELF facts if it has any.

    Hashes the bytes a layer would store. None for what no archive holds (a socket, a device).
    """
    full = prefix / path
    info = full.lstat()
    if stat.S_ISLNK(info.st_mode):
        return LayerFile(path, "link", target=os.readlink(full)), ElfFacts()
    if stat.S_ISDIR(info.st_mode):
        return LayerFile(path, "dir"), ElfFacts()
    if not stat.S_ISREG(info.st_mode):
        return None
    executable = bool(info.st_mode & 0o111)
    if _transformed(path):
        data = stored_bytes(prefix, path, full.read_bytes())
        sha = "" if _is_pyc(path) else hashlib.sha256(data).hexdigest()
        return LayerFile(path, "file", len(data), sha, executable), ElfFacts()
    with full.open("rb") as file:
        facts = elf_facts(file)
        file.seek(0)
        hasher, size = _hash(file)
    return LayerFile(path, "file", size, hasher.hexdigest(), executable), facts


def stored_bytes(prefix: Path, path: str, data: bytes) -> bytes:
    """What a layer stores for the file ``path`` of the environment at ``prefix``.

    A script in ``bin/`` whose ``#!`` names the prefix's interpreter gets
    ``#!/usr/bin/env <name>``, as venv-pack and conda-pack write it; a RECORD names those
    scripts' new hashes, so a distribution's layer is the same in every environment; a
    valid timestamp bytecode cache is stamped with :data:`FIXED_MTIME`, the mtime its
    source gets in the archive. Everything else as it is.
    """
    if _is_pyc(path):
        return _stamped_pyc(prefix, path, data)
    if path.endswith(".dist-info/RECORD"):
        return _record_for_scripts(prefix, path, data)
    if posixpath.dirname(path) == "bin":
        return _relocatable_script(data, str(prefix))
    return data


def write_layer(layer: Layer, prefix: Path, output: Path) -> None:
    """Write ``layer``'s archive to ``output``: the same content always gives the same bytes.

    Members sorted by path, with their parent directories; owner root, mode 0755 or 0644,
    mtime :data:`FIXED_MTIME`; gzip without name or time. Each file is read from
    ``prefix`` and checked against the plan.

    Raises
    ------
    EnvLayerError
        A file's bytes or size differ from what :func:`~zoo_ray.env_layers.plan_layers`
        read: the environment changed since.
    """
    members: dict[str, LayerFile | GeneratedFile | None] = {}
    entries: list[LayerFile | GeneratedFile] = [*layer.files, *layer.generated]
    for entry in entries:
        members[entry.path] = entry
        parent = posixpath.dirname(entry.path)
        while parent and parent not in members:
            members[parent] = None
            parent = posixpath.dirname(parent)
    with output.open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=_COMPRESS_LEVEL, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members):
            _add(tar, prefix, path, members[path])


def _add(tar: tarfile.TarFile, prefix: Path, path: str,
         entry: LayerFile | GeneratedFile | None) -> None:
    info = tarfile.TarInfo(path)
    info.mtime, info.mode, info.uname, info.gname = FIXED_MTIME, 0o644, "", ""
    if isinstance(entry, GeneratedFile):
        data = entry.text.encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    elif entry is None or entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    elif entry.kind == "link":
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.target
        tar.addfile(info)
    else:
        info.size, info.mode = entry.size, 0o755 if entry.executable else 0o644
        if _transformed(path):
            data = stored_bytes(prefix, path, (prefix / path).read_bytes())
            _check(entry, len(data), hashlib.sha256(data).hexdigest(), prefix)
            tar.addfile(info, io.BytesIO(data))
            return
        with (prefix / path).open("rb") as file:
            reader = _HashingReader(file)
            try:
                tar.addfile(info, reader)
            except OSError as exc:  # tarfile's "unexpected end of data": the file shrank
                raise EnvLayerError(_changed(prefix, path, str(exc))) from None
            grown = len(file.read(1))  # tarfile read entry.size bytes: is there more?
            _check(entry, entry.size + grown, reader.hasher.hexdigest(), prefix)


def _check(entry: LayerFile, size: int, sha: str, prefix: Path) -> None:
    if size != entry.size or (entry.sha256 and sha != entry.sha256):
        raise EnvLayerError(_changed(prefix, entry.path, "its content differs from the plan"))


def _changed(prefix: Path, path: str, what: str) -> str:
    return (f"{prefix / path} changed after its layers were planned ({what}). Plan the "
            "layers again once pip or conda has finished changing the environment.")


class _HashingReader:
    """A file whose bytes are hashed as tarfile reads them (one read of each file)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.hasher = file, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.hasher.update(data)
        return data


def _hash(file: IO[bytes]) -> tuple[Any, int]:
    hasher, size = hashlib.sha256(), 0
    for chunk in iter(lambda: file.read(_CHUNK), b""):
        hasher.update(chunk)
        size += len(chunk)
    return hasher, size


def _is_pyc(path: str) -> bool:
    return path.endswith(".pyc") and posixpath.basename(posixpath.dirname(path)) == "__pycache__"


def _transformed(path: str) -> bool:
    return (_is_pyc(path) or path.endswith(".dist-info/RECORD")
            or posixpath.dirname(path) == "bin")


def _relocatable_script(data: bytes, prefix: str) -> bytes:
    match = _SHEBANG.match(data)
    own = prefix.encode() + b"/"
    # Like venv-pack: a script naming the prefix twice cannot be fixed by its first line.
    if not match or not match.group(1).startswith(own) or data.count(own) > 1:
        return data
    name = match.group(1).rsplit(b"/", 1)[-1]
    return b"#!/usr/bin/env " + name + match.group(2) + data[match.end():]


def _stamped_pyc(prefix: Path, path: str, data: bytes) -> bytes:
    if len(data) < 16 or data[4:8] != b"\0\0\0\0":  # hash-based caches carry no mtime
        return data
    cache_dir = posixpath.dirname(path)
    module = posixpath.basename(path).split(".", 1)[0]
    try:
        source = (prefix / posixpath.dirname(cache_dir) / f"{module}.py").stat()
    except OSError:
        return data
    valid = (data[8:12] == struct.pack("<I", int(source.st_mtime) & 0xFFFFFFFF)
             and data[12:16] == struct.pack("<I", source.st_size & 0xFFFFFFFF))
    return data[:8] + struct.pack("<I", FIXED_MTIME) + data[12:] if valid else data


def _record_for_scripts(prefix: Path, path: str, data: bytes) -> bytes:
    site_packages = posixpath.dirname(posixpath.dirname(path))
    lines = data.decode("utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        row = next(csv.reader([line]), [])
        if len(row) < 3 or not row[1].startswith("sha256="):
            continue
        target = posixpath.normpath(posixpath.join(site_packages, row[0]))
        if posixpath.dirname(target) != "bin":
            continue
        try:
            script = (prefix / target).read_bytes()
        except OSError:
            continue
        stored = _relocatable_script(script, str(prefix))
        if stored != script:
            new = base64.urlsafe_b64encode(hashlib.sha256(stored).digest()).rstrip(b"=").decode()
            lines[index] = line.replace(f"{row[1]},{row[2]}", f"sha256={new},{len(stored)}", 1)
    return "".join(lines).encode("utf-8")


def elf_facts(file: IO[bytes]) -> ElfFacts:
    """The needed libraries and run paths (``DT_NEEDED``, ``DT_RPATH``/``DT_RUNPATH``) of
    the ELF file open in ``file``, from its section headers; empty for any other file."""
    head = file.read(64)
    if head[:4] != b"\x7fELF" or len(head) < 52:
        return ElfFacts()
    order = "<" if head[5] == 1 else ">"
    wide = head[4] == 2
    try:
        if wide:
            (offset,) = struct.unpack_from(order + "Q", head, 40)
            size, count = struct.unpack_from(order + "HH", head, 58)
        else:
            (offset,) = struct.unpack_from(order + "I", head, 32)
            size, count = struct.unpack_from(order + "HH", head, 46)
        file.seek(offset)
        table = file.read(size * count)
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, ...
        layout = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
        sections = [struct.unpack_from(layout, table, i * size) for i in range(count)]
        for section in sections:
            if section[1] == _SHT_DYNAMIC:
                return _dynamic(file, section, sections[section[6]], order, wide)
    except (struct.error, IndexError, ValueError, OSError):
        pass  # not an ELF file the loader could read either
    return ElfFacts()


def _dynamic(file: IO[bytes], dynamic: tuple[int, ...], strtab: tuple[int, ...], order: str,
             wide: bool) -> ElfFacts:
    file.seek(dynamic[4])
    entries = file.read(dynamic[5])
    file.seek(strtab[4])
    strings = file.read(strtab[5])

    def text(at: int) -> str:
        return strings[at:strings.index(b"\0", at)].decode("utf-8", "replace")

    step = 16 if wide else 8
    needed, runpaths = [], []
    for tag, value in struct.iter_unpack(order + ("qQ" if wide else "iI"),
                                         entries[:len(entries) - len(entries) % step]):
        if tag == _DT_NEEDED:
            needed.append(text(value))
        elif tag in (_DT_RPATH, _DT_RUNPATH):
            runpaths += [p for p in text(value).split(":") if p]
    return ElfFacts(tuple(needed), tuple(runpaths))

