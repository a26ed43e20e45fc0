"""Real files made by others (fetched, pinned by sha256) through the whole pipeline, per converter."""

from __future__ import annotations

import io
import json

import pytest
from cad_support import TEST_PLUGINS, CadPipeline, assert_png, cad_env, glb_faces
from PIL import Image

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_cad.files import add_file, get_file

MANIFEST = json.loads((__import__("pathlib").Path(__file__).parent / "data_manifest.json").read_text())
IDS = [f["id"] for f in MANIFEST["files"]]
BY_ID = {f["id"]: f for f in MANIFEST["files"]}


@pytest.fixture(scope="module")
def converted(cad_files, tmp_path_factory):
    """Every manifest file added and converted by one pipeline with 2 worker slots: id → (job, file row, app)."""
    tmp = tmp_path_factory.mktemp("real")
    app = Conveyor(load_settings(env=cad_env(f"sqlite:///{tmp}/cad.db", tmp)), plugins=load_plugins(TEST_PLUGINS))
    app.init_db()
    added = {fid: add_file(app, path, path.name) for fid, path in cad_files.items()}
    with CadPipeline(app, concurrency=2) as p:
        jobs = dict(zip(added, p.wait([a.job_id for a in added.values()], timeout=240)))
    yield {fid: (jobs[fid], get_file(app.engine, a.file.id)) for fid, a in added.items()}, app
    app.close()
    app.engine.dispose()


@pytest.mark.parametrize("fid", IDS)
def test_real_file_converts_or_fails_with_its_code(converted, fid):
    results, app = converted
    job, rec = results[fid]
    entry = BY_ID[fid]
    assert rec.cad_format == entry["format"]
    if entry["expect"] == "ok":
        assert job.status.value == "succeeded", (job.error_code, job.last_error)
        assert rec.conversion_status == "done" and job.result["converter"] == entry["converter"]
        assert_png(app.storage.get(rec.preview_path))
        meta = json.loads(app.storage.get(job.result["manifest"][-1]["path"]))
        assert meta["converter"]["id"] == entry["converter"] and meta["source"]["sha256"] == entry["sha256"]
        if entry["converter"] == "dxf":
            assert rec.geometry_path is None and meta["entities"] > 0 and meta["layers"]
        else:
            assert glb_faces(app.storage.get(rec.geometry_path)) > 0 and meta["faces"] > 0
    else:
        assert job.status.value == "failed" and job.error_code == entry["expect"], job.last_error
        assert rec.conversion_status == "failed" and rec.conversion_error["code"] == entry["expect"]
        assert rec.conversion_error["converter"] == entry["converter"]
        assert "Traceback" not in rec.conversion_error["message"]


def test_step_bbox_is_in_source_units(converted):
    results, _ = converted
    _, screw = results["step_screw"]
    assert screw.attributes["units"] == "mm"
    assert screw.attributes["bbox"]["size"] == pytest.approx([19.84, 20.0, 42.3], abs=0.1)
    assert screw.attributes["part_names"]
    _, bearing = results["iges_bearing"]
    assert bearing.attributes["units"] == "mm" and max(bearing.attributes["bbox"]["size"]) > 50


def test_dxf_metadata_layers_units_and_auditor_warnings(converted):
    results, app = converted
    job, rec = results["dxf_layers"]
    assert rec.attributes["units"] == "mm" and len(rec.attributes["layers"]) >= 2
    assert rec.attributes["entities"] > 0 and rec.attributes["extents"]["max"][0] > rec.attributes["extents"]["min"][0]
    job, _ = results["dxf_decimal_comma"]
    meta = json.loads(app.storage.get(job.result["manifest"][-1]["path"]))
    assert any("floating point" in w for w in meta["warnings"])
    assert job.result["warnings"] == meta["warnings"]


def _single(app, data, name, **kw):
    a = add_file(app, data, name, **kw)
    with CadPipeline(app) as p:
        (job,) = p.wait([a.job_id], timeout=120)
    return job, get_file(app.engine, a.file.id)


def test_binary_dxf_converts(cad_app, cad_files, tmp_path):
    import ezdxf
    doc = ezdxf.readfile(cad_files["dxf_relay"])
    out = tmp_path / "relay_binary.dxf"
    doc.saveas(out, fmt="bin")
    assert out.read_bytes().startswith(b"AutoCAD Binary DXF")
    job, rec = _single(cad_app, out, out.name)
    assert job.status.value == "succeeded", job.last_error
    assert rec.cad_format == "dxf" and rec.attributes["entities"] > 0
    assert_png(cad_app.storage.get(rec.preview_path))


def test_dxf_title_block_fields_land_in_the_file_row(cad_app, tmp_path):
    import ezdxf
    doc = ezdxf.new("R2010", setup=True)
    doc.header["$INSUNITS"] = 4
    msp = doc.modelspace()
    msp.add_lwpolyline([(0, 0), (297, 0), (297, 210), (0, 210)], close=True, dxfattribs={"layer": "FRAME"})
    msp.add_text("PART_NO=BRK-100", dxfattribs={"layer": "TITLE"}).set_placement((200, 20))
    msp.add_mtext("MATERIAL: AL 6061\nREV=C", dxfattribs={"layer": "TITLE"}).set_location((200, 40))
    block = doc.blocks.new("TB")
    block.add_attdef("DRAWN_BY", (0, 0))
    msp.add_blockref("TB", (10, 10)).add_auto_attribs({"DRAWN_BY": "J. Smith"})
    path = tmp_path / "sheet.dxf"
    doc.saveas(path)
    job, rec = _single(cad_app, path, path.name)
    assert job.status.value == "succeeded", job.last_error
    assert rec.attributes["title_block"] == {"PART_NO": "BRK-100", "MATERIAL": "AL 6061", "REV": "C",
                                             "DRAWN_BY": "J. Smith"}
    assert rec.attributes["units"] == "mm" and "FRAME" in rec.attributes["layers"]


@pytest.mark.parametrize(("name", "data", "code"), [
    ("empty.step", b"", "empty_geometry"),
    ("nothing.step", b"ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION((''),'2;1');\nFILE_NAME('e','',(''),(''),'','','');\n"
                     b"FILE_SCHEMA(('AUTOMOTIVE_DESIGN'));\nENDSEC;\nDATA;\nENDSEC;\nEND-ISO-10303-21;\n",
     "empty_geometry"),
    ("garbage.step", b"ISO-10303-21;\nHEADER;\nthis is not STEP at all (\n", "conversion_failed"),
    ("garbage.dxf", b"  0\nSECTION\n  2\nENTITIES\n  0\nLINE\n 10\nnot-a-number\n", "empty_geometry"),
    ("nothing.dxf", b"  0\nSECTION\n  2\nENTITIES\n  0\nENDSEC\n  0\nEOF\n", "empty_geometry"),
    ("truncated.dxf", b"  0\nSECTION\n  2\nHEAD", "empty_geometry"),
    ("binary-garbage.dxf", b"AutoCAD Binary DXF\r\n\x1a\x00" + bytes(range(256)) * 4, "conversion_failed"),
])
def test_bad_step_and_dxf_fail_with_their_codes(cad_app, name, data, code):
    job, rec = _single(cad_app, data, name)
    assert job.status.value == "failed" and job.error_code == code, (job.error_code, job.last_error)
    assert rec.conversion_status == "failed" and rec.conversion_error["code"] == code


def test_garbage_step_reports_what_opencascade_printed(cad_app):
    _job, rec = _single(cad_app, b"ISO-10303-21;\nHEADER;\nthis is not STEP at all (\n", "garbage.step")
    assert rec.conversion_error["converter"] == "brep" and rec.conversion_error["stage"] == "read"
    assert "StepFile" in rec.conversion_error["output"] or "STEP" in rec.conversion_error["output"]


def test_dwg_is_unsupported_with_a_clear_code(cad_app):
    job, rec = _single(cad_app, b"AC1032" + bytes(range(256)) * 8, "plan.dwg")
    assert rec.cad_format == "dwg"
    assert job.status.value == "failed" and job.error_code == "unsupported_format" and job.attempts == 1
    assert rec.conversion_status == "unsupported" and "AC1032" in rec.conversion_error["message"]
    assert "DXF" in rec.conversion_error["message"]


def test_missing_library_is_missing_dependency_naming_the_extra(cad_app, cad_files, tmp_path, monkeypatch):
    shadow = tmp_path / "shadow"
    (shadow / "cascadio").mkdir(parents=True)
    (shadow / "cascadio" / "__init__.py").write_text("raise ImportError('No module named cascadio')\n")
    monkeypatch.syspath_prepend(str(shadow))
    # a fresh interpreter sees the shadowed sys.path; the warm fork server started before it
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", "subprocess")
    job, rec = _single(cad_app, cad_files["step_screw"], "screw.step")
    assert job.error_code == "missing_dependency" and "conveyor-jobs[cad]" in job.last_error
    assert rec.conversion_error["code"] == "missing_dependency"


def test_png_preview_size_follows_the_payload(cad_app, cad_files):
    a = add_file(cad_app, cad_files["stl_part1"], "part1.stl", convert=False)
    job_id = cad_app.submit("cad.convert", {"file_id": a.file.id, "preview_size": 256}, file_id=a.file.id)
    with CadPipeline(cad_app) as p:
        p.wait([job_id])
    rec = get_file(cad_app.engine, a.file.id)
    assert Image.open(io.BytesIO(cad_app.storage.get(rec.preview_path))).size == (256, 256)
