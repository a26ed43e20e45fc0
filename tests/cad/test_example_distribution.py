"""The example third-party converter distribution (examples/conveyor-cad-gts) plugs in without touching conveyor_cad."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cad_support import CadPipeline, assert_png, cad_env, glb_faces

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_cad.files import add_file, get_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "conveyor-cad-gts"


def test_its_contract_suite_passes():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE / "src"), *sys.path])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          cwd=EXAMPLE)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "6 passed" in proc.stdout


def test_a_gts_file_is_recognised_by_the_plugins_extension_and_converted(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    plugins = "conveyor_cad_gts.plugin"
    app = Conveyor(load_settings(env={**cad_env(f"sqlite:///{tmp_path}/g.db", tmp_path),
                                      "CONVEYOR_PLUGINS": plugins}), plugins=load_plugins(plugins))
    app.init_db()
    try:
        assert app.plugins.registry("converters").owner("gts") == plugins
        added = add_file(app, EXAMPLE / "tests" / "data" / "tetra.gts")
        assert added.file.cad_format == "gts" and added.job_id
        with CadPipeline(app) as p:
            (job,) = p.wait([added.job_id])
        assert job.status.value == "succeeded", job.last_error
        rec = get_file(app.engine, added.file.id)
        assert glb_faces(app.storage.get(rec.geometry_path)) == 4
        assert_png(app.storage.get(rec.preview_path))
        assert rec.attributes["bbox"]["size"] == [10.0, 10.0, 10.0]
    finally:
        app.close()
        app.engine.dispose()
