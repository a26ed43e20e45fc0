"""Fixtures of the CAD tests: fetched real files, generated meshes, a CAD deployment and a pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cad_data import fetch_manifest_files
from cad_support import TEST_PLUGINS, cad_env

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
MANIFEST = HERE / "data_manifest.json"


@pytest.fixture(scope="session")
def cad_files() -> dict[str, Path]:
    """Real CAD files made by others: Debian packages fetched and pinned by the manifest, id → path."""
    return fetch_manifest_files(MANIFEST)


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
        "box_embedded.gltf": trimesh.Scene(box).export(file_type="gltf", embed_buffers=True)["model.gltf"],
    }
    paths = {}
    for name, data in files.items():
        p = out / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths[name] = p
    return paths
