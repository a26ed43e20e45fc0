"""Fixtures of the CAD tests: fetched real files, generated meshes, a CAD deployment and a pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cad_support import TEST_PLUGINS, cad_env

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
MANIFEST = HERE / "data_manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_root(manifest_text: str) -> Path:
    base = Path(os.environ.get("CONVEYOR_TEST_DATA_CACHE") or Path.home() / ".cache" / "conveyor-test-data")
    return base / hashlib.sha256(manifest_text.encode()).hexdigest()[:16]


def _download(pkg: dict, dest: Path) -> Path:
    deb = dest / pkg["deb"]
    if deb.exists() and _sha256(deb) == pkg["sha256"]:
        return deb
    spec = f"{pkg['name']}={pkg['version']}"
    for attempt in range(2):
        proc = subprocess.run(["apt-get", "download", spec], cwd=dest, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600)
        if proc.returncode == 0 and deb.exists():
            break
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, stdin=subprocess.DEVNULL, timeout=600)
    else:
        raise RuntimeError(f"apt-get download {spec} failed: {proc.stderr[-800:]}")
    got = _sha256(deb)
    if got != pkg["sha256"]:
        deb.unlink()
        raise RuntimeError(f"{pkg['deb']}: sha256 {got} does not match the manifest's {pkg['sha256']}")
    return deb


@pytest.fixture(scope="session")
def cad_files() -> dict[str, Path]:
    """Real CAD files made by others: Debian packages fetched and pinned by the manifest, id → path."""
    text = MANIFEST.read_text()
    manifest = json.loads(text)
    root = _cache_root(text)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for pkg in manifest["packages"]:
        tree = root / pkg["name"]
        marker = tree / ".extracted"
        if not marker.exists():
            deb = _download(pkg, root)
            shutil.rmtree(tree, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, capture_output=True)
            marker.write_text(pkg["sha256"])
    for f in manifest["files"]:
        path = root / f["package"] / f["path"].lstrip("/")
        if not path.is_file():
            raise RuntimeError(f"{f['id']}: {f['path']} is not in {f['package']} {f['version']}")
        got = _sha256(path)
        if got != f["sha256"]:
            raise RuntimeError(f"{f['id']}: sha256 {got} does not match the manifest's {f['sha256']}")
        out[f["id"]] = path
    return out


@pytest.fixture(scope="session")
def manifest_files() -> list[dict]:
    """The manifest's file entries (id, package, path, sha256, format, expect)."""
    return json.loads(MANIFEST.read_text())["files"]


@pytest.fixture
def cad_app(tmp_path):
    """A CAD deployment on SQLite with the test converters loaded."""
    env = cad_env(f"sqlite:///{tmp_path}/cad.db", tmp_path)
    app = Conveyor(load_settings(env=env), plugins=load_plugins(TEST_PLUGINS))
    app.init_db()
    yield app
    app.close()
    app.engine.dispose()


@pytest.fixture
def cad_pipeline(cad_app):
    """Factory: `with cad_pipeline(concurrency=2) as p: p.wait(ids)` on the cad_app."""
    from cad_support import CadPipeline
    return lambda **kw: CadPipeline(cad_app, **kw)


@pytest.fixture
def meshes(tmp_path) -> dict[str, Path]:
    """Small meshes generated here: a box and a torus in STL (ASCII, binary), OBJ, PLY, OFF, GLB, 3MF."""
    import trimesh

    out = tmp_path / "meshes"
    out.mkdir()
    box = trimesh.creation.box(extents=(20.0, 10.0, 5.0))
    torus = trimesh.creation.torus(major_radius=10.0, minor_radius=3.0)
    files = {
        "box_ascii.stl": box.export(file_type="stl_ascii"),
        "box_binary.stl": box.export(file_type="stl"),
        "torus.obj": torus.export(file_type="obj"),
        "torus.ply": torus.export(file_type="ply"),
        "box.off": box.export(file_type="off"),
        "torus.glb": trimesh.Scene(torus).export(file_type="glb"),
        "box.3mf": box.export(file_type="3mf"),
    }
    paths = {}
    for name, data in files.items():
        p = out / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths[name] = p
    return paths
