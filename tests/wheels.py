"""Wheels made on the spot for tests that install a package (tests only, on the gateway)."""
from __future__ import annotations

import uuid
import zipfile
from pathlib import Path

__all__ = ["make_wheel"]


def make_wheel(root: Path, name: str, value: str) -> Path:
    """A one-module wheel, written directly: a fresh venv has no wheel builder, CI no index.

    Its version is new every run, so the env's content address is too: the local
    pack cache of an earlier run cannot turn the first pack into a reuse.
    """
    version = f"1.{uuid.uuid4().int % 10**9}"
    wheel = root / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: zoo-ray-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist}/RECORD", "".join(f"{p},,\n" for p in [*files, f"{dist}/RECORD"]))
    return wheel
