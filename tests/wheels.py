"""Wheels made on the spot for tests that install a package (tests only, on the gateway)."""
from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

__all__ = ["make_wheel"]


def make_wheel(root: Path, name: str, value: str, payload_bytes: int = 0) -> Path:
    """A one-module wheel, written directly: a fresh venv has no wheel builder, CI no index.

    Its version is new every call, so the env's content address is too: the local
    pack cache of an earlier run cannot turn the first pack into a reuse. With
    ``payload_bytes``, the package also holds a file of that many random bytes (a large
    distribution, which ships in a layer of its own).
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
        payload = [f"{name}/payload.bin"] if payload_bytes else []
        for path in payload:
            zf.writestr(path, os.urandom(payload_bytes))
        zf.writestr(f"{dist}/RECORD",
                    "".join(f"{p},,\n" for p in [*files, *payload, f"{dist}/RECORD"]))
    return wheel
