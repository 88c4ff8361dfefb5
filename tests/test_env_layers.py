"""Layered environments (zoo_ray.env_layers, zoo_ray.env_layer_files), without a cluster.

Synthetic prefixes (fake RECORDs, conda-meta records, ELF files) check how files are cut
into layers and when the plan falls back to one archive; a real venv, with a compiled
wheel whose extension loads a vendored library, is cut, written, unpacked into separate
directories as YARN would, and its assembled interpreter run, before and after a
``pip install``, a version change and an uninstall.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import py_compile
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from tests.wheels import make_wheel

from zoo_ray.env_layer_files import (
    FIXED_MTIME,
    MANIFEST,
    elf_facts,
    stored_bytes,
    write_layer,
)
from zoo_ray.env_layers import (
    BASE_LINK,
    TOP_LINK,
    Fallback,
    Layer,
    LayerPlan,
    plan_layers,
)
from zoo_ray.errors import EnvLayerError, InvalidArgumentError

SP = "lib/python3.11/site-packages"
BIG = 4096  # bytes: with min_layer_bytes=BIG, a distribution this large gets its own layer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _venv(prefix: Path) -> Path:
    """A venv's skeleton: enough to plan (nothing here runs its interpreter)."""
    (prefix / SP).mkdir(parents=True)
    (prefix / "bin").mkdir()
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    (prefix / "bin" / "python").symlink_to(sys.executable)
    return prefix


def _install(prefix: Path, name: str, files: dict[str, bytes | str], version: str = "1.0",
             unrecorded: tuple[str, ...] = ()) -> None:
    """Write ``files`` (relative to site-packages) and a RECORD listing them as pip does,
    but for ``unrecorded``."""
    dist_info = f"{name}-{version}.dist-info"
    files = {**files, f"{dist_info}/METADATA": f"Name: {name}\nVersion: {version}\n"}
    rows = []
    for rel, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        target = Path(os.path.normpath(prefix / SP / rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if rel not in unrecorded:
            rows.append(f"{rel},sha256={_b64(data)},{len(data)}\r\n")
    (prefix / SP / dist_info / "RECORD").write_text("".join(rows) + f"{dist_info}/RECORD,,\r\n")


def _plan(prefix: Path, kind: str = "venv") -> LayerPlan:
    plan = plan_layers(prefix, kind, min_layer_bytes=BIG)
    assert isinstance(plan, LayerPlan), plan
    return plan


def _layer_of(plan: LayerPlan, path: str) -> Layer:
    (layer,) = [layer for layer in plan.layers if path in {f.path for f in layer.files}]
    return layer


def _all_entries(prefix: Path) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(prefix):
        rel = Path(root).relative_to(prefix)
        links = [d for d in dirs if (Path(root) / d).is_symlink()]
        found |= {(rel / name).as_posix() for name in files + links}
        if not dirs and not files:
            found.add(rel.as_posix())  # an empty directory
    return found


def _elf(needed: list[str], runpath: str) -> bytes:
    """A 64-bit little-endian ELF file holding only a dynamic section: what the plan reads."""
    strings = b"\0"
    offsets = []
    for text in [*needed, runpath]:
        offsets.append(len(strings))
        strings += text.encode() + b"\0"
    tags = [(1, offset) for offset in offsets[:-1]] + [(29, offsets[-1]), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in tags)
    section_table = 64 + len(strings) + len(dynamic)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, section_table, 0, 64, 0, 0, 64, 3, 0)
    sections = [bytes(64),
                struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, 64, len(strings), 0, 0, 1, 0),
                struct.pack("<IIQQQQIIQQ", 0, 6, 0, 0, 64 + len(strings), len(dynamic), 1, 0,
                            8, 16)]
    return header + strings + dynamic + b"".join(sections)


# ---------------------------------------------------------------- cutting


def test_every_file_is_in_one_layer_and_the_plan_round_trips(tmp_path):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "big", {"big/__init__.py": "x = 1\n" + "#" * BIG})
    _install(prefix, "small", {"small.py": "y = 2\n", "../../../bin/small": "#!/bin/sh\n"})
    (prefix / SP / "stray.py").write_text("z = 3\n")  # in no RECORD
    py_compile.compile(str(prefix / SP / "small.py"))
    plan = _plan(prefix)
    paths = [f.path for layer in plan.layers for f in layer.files]
    assert sorted(paths) == sorted(_all_entries(prefix))
    assert [layer.role for layer in plan.layers] == ["base", "top", "dist"]
    assert plan.layers[2].dists == ("big==1.0",)
    assert set(plan.layers[1].dists) == {"small==1.0"}
    assert _layer_of(plan, f"{SP}/stray.py").role == "top"
    assert _layer_of(plan, f"{SP}/__pycache__/small.cpython-311.pyc").role == "top"
    assert _layer_of(plan, "bin/small").role == "top"
    assert _layer_of(plan, "pyvenv.cfg").role == "base"
    assert plan.script_dirs == [f"{TOP_LINK}/bin", f"{plan.layers[2].link}/bin",
                                f"{BASE_LINK}/bin"]
    manifest = {g.path: g.text for g in plan.layers[1].generated}[MANIFEST]
    assert json.loads(manifest)["layers"] == [TOP_LINK, plan.layers[2].link]
    again = LayerPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    fallback = Fallback("/p", "venv", ("why",))
    assert Fallback.from_dict(json.loads(json.dumps(fallback.to_dict()))) == fallback


def test_a_distribution_gives_the_same_layer_in_two_environments(tmp_path):
    layers = []
    archives = []
    for name in ("one", "other"):
        prefix = _venv(tmp_path / name)
        script = f"#!{prefix}/bin/python\nimport big\n"
        _install(prefix, "big", {"big/__init__.py": "#" * BIG, "../../../bin/big": script})
        (prefix / SP / "big/__init__.py").touch()  # other mtimes must not matter
        layer = _plan(prefix).layers[2]
        layers.append(layer)
        archive = tmp_path / f"{name}.tar.gz"
        write_layer(layer, prefix, archive)
        archives.append(archive.read_bytes())
        stored = stored_bytes(prefix, "bin/big", (prefix / "bin/big").read_bytes())
        assert stored == b"#!/usr/bin/env python\nimport big\n"
        record = stored_bytes(prefix, f"{SP}/big-1.0.dist-info/RECORD",
                              (prefix / SP / "big-1.0.dist-info/RECORD").read_bytes())
        assert f"../../../bin/big,sha256={_b64(stored)},{len(stored)}\r\n" in record.decode()
    assert layers[0].digest == layers[1].digest
    assert layers[0].link == layers[1].link == f"zl-{layers[0].digest}"
    assert archives[0] == archives[1]


def test_installing_a_small_package_changes_only_the_top(tmp_path):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "big", {"big/__init__.py": "#" * BIG})
    before = _plan(prefix)
    _install(prefix, "tiny", {"tiny.py": "t = 1\n"})
    after = _plan(prefix)
    changed = {a.role for a, b in zip(before.layers, after.layers) if a.digest != b.digest}
    assert changed == {"top"}
    assert len(after.layers) == len(before.layers)


def test_a_file_two_distributions_claim_keeps_them_in_one_layer(tmp_path):
    # `pip install --no-deps other` over `first`: both RECORDs name pkg/core.py.
    prefix = _venv(tmp_path / "env")
    _install(prefix, "first", {"pkg/__init__.py": "", "pkg/core.py": "a = 1\n" + "#" * BIG})
    _install(prefix, "other", {"pkg/core.py": "a = 2\n" + "#" * BIG, "other.py": ""})
    plan = _plan(prefix)
    layer = _layer_of(plan, f"{SP}/pkg/core.py")
    assert set(layer.dists) == {"first==1.0", "other==1.0"}
    assert _layer_of(plan, f"{SP}/other.py") is layer
    (entry,) = [f for f in layer.files if f.path == f"{SP}/pkg/core.py"]
    assert entry.sha256 == hashlib.sha256((prefix / SP / "pkg/core.py").read_bytes()).hexdigest()


def test_a_package_another_distribution_adds_to_stays_whole(tmp_path):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "host", {"host/__init__.py": "#" * BIG})
    _install(prefix, "plugin", {"host/plugin.py": "#" * BIG})
    _install(prefix, "ns_a", {"ns/a/__init__.py": "#" * BIG})  # ns/ has no __init__.py:
    _install(prefix, "ns_b", {"ns/b/__init__.py": "#" * BIG})  # a namespace, may span layers
    plan = _plan(prefix)
    assert set(_layer_of(plan, f"{SP}/host/plugin.py").dists) == {"host==1.0", "plugin==1.0"}
    assert _layer_of(plan, f"{SP}/ns/a/__init__.py").dists == ("ns_a==1.0",)
    assert _layer_of(plan, f"{SP}/ns/b/__init__.py").dists == ("ns_b==1.0",)


def test_files_found_through_the_prefix_keep_their_distribution_in_the_base(tmp_path):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "jarred", {"jarred/__init__.py": "#" * BIG,
                                "../../../share/jarred/lib.jar": "jar"})
    plan = _plan(prefix)
    assert plan.layers[0].dists == ("jarred==1.0",)
    assert _layer_of(plan, f"{SP}/jarred/__init__.py").role == "base"


def test_an_origin_run_path_ties_a_library_to_the_extension_that_loads_it(tmp_path):
    prefix = _venv(tmp_path / "env")
    extension = _elf(["libdep.so.1", "libc.so.6"], "$ORIGIN/../dep.libs")
    _install(prefix, "user", {"user/__init__.py": "#" * BIG, "user/_ext.so": extension})
    _install(prefix, "dep", {"dep.libs/libdep.so.1": "#" * BIG, "dep/__init__.py": ""})
    _install(prefix, "lone", {"lone/_ext.so": _elf(["libelse.so"], "$ORIGIN/../dep.libs"),
                              "lone/__init__.py": "#" * BIG})
    plan = _plan(prefix)
    assert set(_layer_of(plan, f"{SP}/dep.libs/libdep.so.1").dists) == {"dep==1.0", "user==1.0"}
    assert _layer_of(plan, f"{SP}/lone/_ext.so").dists == ("lone==1.0",)


def test_a_pth_line_keeps_the_directory_it_names_in_its_layer(tmp_path):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "eggs", {"eggs.pth": "./vendored\n.\nimport os\n"})
    _install(prefix, "vendor", {"vendored/mod.py": "#" * BIG})
    _install(prefix, "other", {"other/__init__.py": "#" * BIG})
    plan = _plan(prefix)
    assert set(_layer_of(plan, f"{SP}/eggs.pth").dists) == {"eggs==1.0", "vendor==1.0"}
    assert _layer_of(plan, f"{SP}/other/__init__.py").dists == ("other==1.0",)  # not "."


def test_elf_facts_are_what_readelf_reads(tmp_path):
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("no readelf to compare with")
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = sorted((Path(sys.base_prefix) / "lib" / version).glob("lib-dynload/*.so"))[:5]
    try:  # pyzmq (dev extras) has an $ORIGIN run path
        candidates += sorted(Path(metadata.distribution("pyzmq").locate_file("")).glob(
            "zmq/**/*.so"))
    except metadata.PackageNotFoundError:
        pass
    assert candidates
    for library in candidates:
        with library.open("rb") as file:
            facts = elf_facts(file)
        out = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True,
                             check=True).stdout
        needed = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines()
                  if "(NEEDED)" in line]
        runpaths = [p for line in out.splitlines() if "(RPATH)" in line or "(RUNPATH)" in line
                    for p in line.split("[", 1)[1].rstrip("]").split(":")]
        assert (list(facts.needed), list(facts.runpaths)) == (needed, runpaths), library


def test_conda_packages_stay_in_the_base_and_pip_distributions_get_layers(tmp_path):
    prefix = tmp_path / "conda"
    conda_files = {"bin/python3.11": "elf", f"{SP}/README.txt": "",
                   "lib/python3.11/os.py": "#", f"{SP}/condapkg/__init__.py": "#" * BIG,
                   f"{SP}/condapkg-2.0.dist-info/RECORD": "condapkg/__init__.py,,\n"}
    for rel, text in conda_files.items():
        (prefix / rel).parent.mkdir(parents=True, exist_ok=True)
        (prefix / rel).write_text(text)
    (prefix / "conda-meta").mkdir()
    (prefix / "conda-meta" / "python-3.11.json").write_text(json.dumps(
        {"name": "python", "files": [p for p in conda_files if "condapkg" not in p]}))
    (prefix / "conda-meta" / "condapkg-2.0.json").write_text(json.dumps(
        {"name": "condapkg", "files": [p for p in conda_files if "condapkg" in p]}))
    _install(prefix, "piped", {"piped/__init__.py": "#" * BIG, "../../../bin/piped": "#!/x\n"})
    plan = _plan(prefix, "conda")
    base, top, piped = plan.layers
    assert base.dists == ("condapkg==2.0",)
    assert {"bin/python3.11", "lib/python3.11/os.py", "conda-meta/python-3.11.json"} <= {
        f.path for f in base.files}
    assert piped.dists == ("piped==1.0",) and _layer_of(plan, "bin/piped") is piped
    _install(prefix, "tiny", {"tiny.py": ""})
    again = _plan(prefix, "conda")
    assert (again.layers[0].digest, again.layers[2].digest) == (base.digest, piped.digest)
    assert again.layers[1].digest != top.digest


# ---------------------------------------------------------------- falling back


def test_an_editable_install_ships_its_pth_as_the_single_archive_would(tmp_path, caplog):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "mine", {"__editable__.mine-1.0.pth": f"{tmp_path / 'src'}\n"})
    (tmp_path / "src").mkdir()
    (prefix / SP / "mine-1.0.dist-info" / "direct_url.json").write_text(json.dumps(
        {"url": f"file://{tmp_path / 'src'}", "dir_info": {"editable": True}}))
    result = plan_layers(prefix, "venv")
    # Its code is outside the environment either way (envs.warn_editable says so).
    assert isinstance(result, LayerPlan), result
    top = _layer_of(result, f"{SP}/__editable__.mine-1.0.pth")
    assert top.role == "top" and "ships as one archive" not in caplog.text


def test_pth_files_that_would_run_out_of_order_fall_back(tmp_path):
    # conda's setuptools in the base, a pip distribution's .pth sorting before it elsewhere.
    prefix = tmp_path / "conda"
    (prefix / SP).mkdir(parents=True)
    (prefix / SP / "distutils-precedence.pth").write_text("import os\n")
    (prefix / "conda-meta").mkdir()
    (prefix / "conda-meta" / "setuptools.json").write_text(json.dumps(
        {"files": [f"{SP}/distutils-precedence.pth"]}))
    _install(prefix, "virtualenv", {"_virtualenv.pth": "import _virtualenv\n",
                                    "_virtualenv.py": "#" * BIG})
    result = plan_layers(prefix, "conda", min_layer_bytes=BIG)
    assert isinstance(result, Fallback)
    assert result.reasons == ("distutils-precedence.pth (base layer) would run before "
                              "_virtualenv.pth (another layer)",)
    (prefix / SP / "_virtualenv.pth").rename(prefix / SP / "zz_virtualenv.pth")
    assert isinstance(plan_layers(prefix, "conda", min_layer_bytes=BIG), LayerPlan)


def test_two_site_packages_and_other_kinds_are_refused(tmp_path):
    prefix = _venv(tmp_path / "env")
    (prefix / "lib/python3.10/site-packages").mkdir(parents=True)
    result = plan_layers(prefix, "venv")
    assert isinstance(result, Fallback) and "2 lib/python3*/site-packages" in result.reasons[0]
    with pytest.raises(InvalidArgumentError, match="conda' or 'venv"):
        plan_layers(prefix, "archive")


# ---------------------------------------------------------------- writing


def test_a_layer_archive_is_deterministic_and_checked_against_the_plan(tmp_path):
    prefix = _venv(tmp_path / "env")
    _install(prefix, "big", {"big/__init__.py": "#" * BIG, "big/run.sh": "#!/bin/sh\n"})
    (prefix / SP / "big/run.sh").chmod(0o700)
    py_compile.compile(str(prefix / SP / "big/__init__.py"))
    layer = _plan(prefix).layers[2]
    write_layer(layer, prefix, tmp_path / "a.tar.gz")
    os.utime(prefix / SP / "big/run.sh", (1, 1))
    write_layer(layer, prefix, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
        pyc = tar.extractfile(f"{SP}/big/__pycache__/__init__.cpython-311.pyc").read()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(FIXED_MTIME, 0, 0, "")}
    modes = {m.name: m.mode for m in members}
    assert (modes[f"{SP}/big/run.sh"], modes[f"{SP}/big/__init__.py"], modes[SP]) == (
        0o755, 0o644, 0o755)
    assert struct.unpack("<I", pyc[8:12])[0] == FIXED_MTIME  # valid for its source's mtime
    (prefix / SP / "big/__init__.py").write_text("#" * (BIG + 1))
    with pytest.raises(EnvLayerError, match="Plan the layers again"):
        write_layer(layer, prefix, tmp_path / "c.tar.gz")


# ---------------------------------------------------------------- a real venv

_PROBE = '''\
import json, sys
from importlib import metadata


def facts():
    import markupsafe._speedups, zmq
    return {"dists": sorted(f"{d.metadata['Name']}=={d.version}"
                            for d in metadata.distributions()),
            "zmq": zmq.zmq_version(), "zmq_file": zmq.__file__,
            "speedups": markupsafe._speedups.__file__,
            "distutils_hack": "_distutils_hack" in sys.modules, "path": sys.path}


def main():
    print(json.dumps(facts()))
'''


def _probe_wheel(root: Path) -> Path:
    """A wheel with a console script, ``zoo-layers-probe``, printing what the env holds."""
    dist = "layers_probe-1.0.dist-info"
    files = {"layers_probe.py": _PROBE,
             f"{dist}/METADATA": "Metadata-Version: 2.1\nName: layers-probe\nVersion: 1.0\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: zoo-ray-tests\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n",
             f"{dist}/entry_points.txt": "[console_scripts]\n"
                                         "zoo-layers-probe = layers_probe:main\n"}
    wheel = root / "layers_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist}/RECORD", "".join(f"{p},,\n" for p in [*files, f"{dist}/RECORD"]))
    return wheel


def _wheel_of_installed(name: str, root: Path) -> Path:
    """A wheel of a compiled distribution the running interpreter has: offline, and real."""
    dist = metadata.distribution(name)
    files = [f for f in dist.files or () if "__pycache__" not in f.parts
             and f.parts[0] != ".." and f.name not in ("RECORD", "INSTALLER", "REQUESTED",
                                                       "direct_url.json")]
    dist_info = next(f.parent for f in files if f.name == "METADATA")
    tag = next(line[5:] for line in dist.read_text("WHEEL").splitlines()
               if line.startswith("Tag: "))
    wheel = root / f"{str(dist_info)[:-len('.dist-info')]}-{tag}.whl"
    rows = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for file in files:
            data = Path(dist.locate_file(file)).read_bytes()
            zf.writestr(str(file), data)
            rows.append(f"{file},sha256={_b64(data)},{len(data)}\n")
        zf.writestr(f"{dist_info}/RECORD", "".join(rows) + f"{dist_info}/RECORD,,\n")
    return wheel


def _pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check",
                    "-q", *args], check=True, stdin=subprocess.DEVNULL)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


def _run(argv: list[str], cwd: Path, **extra: str) -> dict:
    out = subprocess.run(argv, cwd=cwd, env=_clean_env(**extra), capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _assemble(plan: LayerPlan, store: Path, container: Path) -> int:
    """Write the layers the store lacks, unpack each into a directory of its own with tar,
    as a NodeManager does, and link them into ``container``; the bytes written."""
    written = 0
    container.mkdir()
    for layer in plan.layers:
        archive = store / "archives" / f"{layer.digest}.tar.gz"
        unpacked = store / "nm" / layer.digest
        if not archive.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            write_layer(layer, Path(plan.prefix), archive)
            written += archive.stat().st_size
        if not unpacked.exists():
            unpacked.mkdir(parents=True)
            subprocess.run(["tar", "-xzf", str(archive), "-C", str(unpacked)], check=True)
        (container / layer.link).symlink_to(unpacked)
    return written


def _archive_bytes(plan: LayerPlan, store: Path) -> dict[str, int]:
    return {layer.role if layer.role != "dist" else layer.link:
            (store / "archives" / f"{layer.digest}.tar.gz").stat().st_size
            for layer in plan.layers}


def _check_assembled(plan: LayerPlan, venv: Path, store: Path, container: Path) -> dict:
    """Run the original and the assembled environment; they must report the same."""
    code = "import layers_probe; layers_probe.main()"
    original = _run([str(venv / "bin/python"), "-c", code], cwd=venv)
    assembled = _run([str(container / BASE_LINK / "bin/python"), "-c", code], cwd=container)
    assert assembled["dists"] == original["dists"]
    assert assembled["zmq"] == original["zmq"]
    assert assembled["distutils_hack"] == original["distutils_hack"]
    assert not [p for p in assembled["path"] if p.startswith(str(venv))]
    for key in ("zmq_file", "speedups"):
        assert os.path.realpath(assembled[key]).startswith(str(store / "nm")), assembled[key]
    # The console script runs with the layers' bin directories on PATH, as executors get.
    path = os.pathsep.join([*(str(container / d) for d in plan.script_dirs),
                            os.environ.get("PATH", "")])
    script = [container / d / "zoo-layers-probe" for d in plan.script_dirs]
    (found,) = [s for s in script if s.exists()]
    assert found.read_bytes().startswith(b"#!/usr/bin/env python")
    by_script = _run([str(found)], cwd=container, PATH=path)
    assert by_script["dists"] == original["dists"]
    return original


def test_a_real_venv_assembled_from_its_layers_behaves_like_the_venv(tmp_path):
    pytest.importorskip("zmq", reason="pyzmq (dev extras) gives the compiled wheel")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    venv, store = tmp_path / "venv", tmp_path / "store"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pyzmq = _wheel_of_installed("pyzmq", wheels)
    installed = [make_wheel(wheels, "layers_one", "1"), make_wheel(wheels, "layers_two", "2"),
                 _probe_wheel(wheels), pyzmq, _wheel_of_installed("markupsafe", wheels)]
    _pip(venv, "install", "--no-index", "--no-deps", *map(str, installed))

    plan = plan_layers(venv, "venv")
    assert isinstance(plan, LayerPlan), plan
    assert sorted(f.path for layer in plan.layers for f in layer.files) == sorted(
        _all_entries(venv))
    zmq_layer = _layer_of(plan, next(f.path for layer in plan.layers for f in layer.files
                                     if f.path.endswith(".so") and "/zmq/" in f.path))
    assert zmq_layer.role == "dist" and zmq_layer.dists[0].startswith("pyzmq==")
    first = _assemble(plan, store, tmp_path / "c1")
    _check_assembled(plan, venv, store, tmp_path / "c1")
    # Bytecode caches stay valid: each names its source's mtime in the unpacked layer.
    pycs = list((store / "nm" / zmq_layer.digest).rglob("__pycache__/*.pyc"))
    assert pycs
    for pyc in pycs:
        source = pyc.parent.parent / (pyc.name.split(".", 1)[0] + ".py")
        assert struct.unpack("<I", pyc.read_bytes()[8:12])[0] == int(source.stat().st_mtime)

    # Install, change a version of, and uninstall a small package: only the top is new.
    changes = [("install", "--no-index", "--no-deps", str(make_wheel(wheels, "layers_new", "3"))),
               ("install", "--no-index", "--no-deps", str(make_wheel(wheels, "layers_two", "4"))),
               ("uninstall", "-y", "layers_one")]
    old, written = plan, []
    for step, change in enumerate(changes):
        _pip(venv, *change)
        new = plan_layers(venv, "venv")
        assert isinstance(new, LayerPlan), new
        fresh = {(x.role, x.digest) for x in new.layers} - {(x.role, x.digest)
                                                             for x in old.layers}
        assert fresh == {("top", new.layers[1].digest)}, change
        written.append(_assemble(new, store, tmp_path / f"c{step + 2}"))
        original = _check_assembled(new, venv, store, tmp_path / f"c{step + 2}")
        sizes = _archive_bytes(new, store)
        assert written[-1] == sizes["top"] < 0.1 * sum(sizes.values()), sizes
        old = new
    assert not any(d.startswith("layers_one==") for d in original["dists"])
    assert any(d.startswith("layers_new==") for d in original["dists"])
    print(f"\nlayers {len(plan.layers)}, unpacked {plan.size} bytes, archives "
          f"{_archive_bytes(plan, store)} (first write {first} bytes); after each change "
          f"{written} bytes written of {sum(_archive_bytes(old, store).values())}")

    # The same distributions in another venv give the same layers (pip, setuptools, pyzmq).
    other = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "venv", str(other)], check=True)
    _pip(other, "install", "--no-index", "--no-deps", str(pyzmq))
    again = plan_layers(other, "venv")
    assert isinstance(again, LayerPlan), again
    shared = {x.digest for x in again.layers[2:]} & {x.digest for x in plan.layers[2:]}
    assert shared == {x.digest for x in plan.layers[2:]}, (again.layers, plan.layers)

