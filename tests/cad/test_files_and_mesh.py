"""Files, sniffing, the mesh converter and the cad.convert kind, on meshes generated here."""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile

import fsspec
import pytest
from cad_support import assert_png, glb_faces
from sqlalchemy import update

from conveyor.schema import jobs
from conveyor_cad.files import add_file, file_json, get_file, update_for_attempt
from conveyor_cad.formats import sniff_bytes

STATUS_OF = {"succeeded": "done"}


# ------------------------------------------------------------------ sniffing

@pytest.mark.parametrize(("head", "name", "fmt"), [
    (b"ISO-10303-21;\nHEADER;", "part.bin", "step"),
    (b"\xef\xbb\xbf  ISO-10303-21;\n", "part.txt", "step"),
    (b" " * 72 + b"S      1\n" + b" " * 72 + b"G      1\n", "x.dat", "iges"),
    (b"glTF\x02\x00\x00\x00", "model", "glb"),
    (b"AC1032\x00\x00", "plan.bin", "dwg"),
    (b"AutoCAD Binary DXF\r\n\x1a\x00rest", "plan.bin", "dxf"),
    (b"  0\nSECTION\n  2\nHEADER\n", "plan.txt", "dxf"),
    (b"999\ncomment\n  0\nSECTION\n", "plan", "dxf"),
    (b"ply\nformat ascii 1.0\n", "m", "ply"),
    (b"OFF\n8 6 0\n", "m", "off"),
    (b"solid cube\n facet normal 0 0 1\n", "cube.txt", "stl"),
    (b"# comment\nv 0 0 0\nv 1 0 0\nf 1 2 3\n", "m", "obj"),
    (b'{"asset": {"version": "2.0"}}', "m", "gltf"),
    (b"", "empty.stl", "stl"),
    (b"just some text", "notes.txt", None),
])
def test_sniff_by_content_then_extension(head, name, fmt):
    assert sniff_bytes(head, len(head), name) == fmt


def test_binary_stl_whose_header_starts_with_solid_is_binary():
    data = b"solid exported by a tool" + b" " * 56 + struct.pack("<I", 1) + b"\x00" * 50
    assert sniff_bytes(data, len(data), "x.bin") == "stl"


def test_3mf_is_recognised_inside_the_zip(meshes):
    p = meshes["box.3mf"]
    from conveyor_cad.formats import sniff_file
    renamed = p.with_name("upload.bin")
    renamed.write_bytes(p.read_bytes())
    assert sniff_file(renamed) == "3mf"


# ------------------------------------------------------------------ add_file

def test_add_file_stores_bytes_and_submits_in_one_transaction(cad_app, meshes):
    data = meshes["box_binary.stl"].read_bytes()
    with cad_app.engine.begin() as conn:
        added = add_file(cad_app, io.BytesIO(data), "box.stl", tenant="acme", org="eng", conn=conn)
    rec = added.file
    assert rec.cad_format == "stl" and rec.size == len(data) and rec.content_type == "model/stl"
    assert rec.conversion_status == "pending" and rec.tenant_id == "acme"
    import hashlib
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    with fsspec.open(rec.system_path, "rb") as fh:
        assert fh.read() == data
    job = cad_app.get(added.job_id)
    assert job.kind == "cad.convert" and job.file_id == rec.id and job.payload == {"file_id": rec.id}


def test_add_file_rolled_back_with_the_callers_transaction(cad_app, meshes):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), cad_app.engine.begin() as conn:
        added = add_file(cad_app, meshes["torus.obj"], conn=conn)
        raise Boom
    assert get_file(cad_app.engine, added.file.id) is None
    assert cad_app.list_jobs(file_id=added.file.id) == []


def test_unknown_format_is_stored_unsupported_without_a_job(cad_app, tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("meeting notes, not a CAD file")
    added = add_file(cad_app, p)
    assert added.job_id is None
    assert added.file.conversion_status == "unsupported"
    assert added.file.conversion_error["code"] == "unsupported_format"


# ------------------------------------------------------------------ conversions through the pipeline

def test_every_mesh_format_converts_to_glb_png_and_metadata(cad_app, cad_pipeline, meshes):
    added = {name: add_file(cad_app, p) for name, p in meshes.items()}
    with cad_pipeline(concurrency=2) as p:
        done = p.wait([a.job_id for a in added.values()])
    for (name, a), job in zip(added.items(), done):
        assert job.status.value == "succeeded", (name, job.error_code, job.last_error)
        rec = get_file(cad_app.engine, a.file.id)
        assert rec.conversion_status == "done" and rec.conversion_error is None, name
        assert rec.preview_path == f"jobs/{job.id}/{job.attempt_id}/preview.png"
        assert rec.geometry_path == f"jobs/{job.id}/{job.attempt_id}/model.glb"
        assert glb_faces(cad_app.storage.get(rec.geometry_path)) > 0
        assert_png(cad_app.storage.get(rec.preview_path))
        manifest = {d["role"]: d for d in job.result["manifest"]}
        assert set(manifest) == {"geometry", "preview", "metadata"}
        for d in manifest.values():
            assert d["status"] == "ok" and d["size"] > 0 and len(d["sha256"]) == 64
        meta = json.loads(cad_app.storage.get(manifest["metadata"]["path"]))
        assert meta["converter"] == {"id": "mesh", "version": "1.0"} and meta["faces"] > 0
        assert meta["format"] == a.file.cad_format
    box = get_file(cad_app.engine, added["box_binary.stl"].file.id)
    assert box.attributes["bbox"]["size"] == pytest.approx([20.0, 10.0, 5.0])
    assert box.attributes["volume"] == pytest.approx(1000.0)
    urls = file_json(cad_app, box)
    with fsspec.open(urls["preview_url"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("name", "data", "code"), [
    ("empty.stl", b"", "empty_geometry"),
    ("garbage.stl", b"solid x\n facet normal nonsense\n this is not an stl at all\n", "empty_geometry"),
    ("garbage.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n", "conversion_failed"),
    ("zero.stl", b"\x00" * 80 + struct.pack("<I", 0), "empty_geometry"),
    ("flat.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "empty_geometry"),
    ("nan.stl", b"solid s\nfacet normal 0 0 1\nouter loop\nvertex nan 0 0\nvertex 1 nan 0\nvertex 0 1 nan\n"
                b"endloop\nendfacet\nendsolid s\n", "empty_geometry"),
    ("huge.off", b"OFF\n353535235358 1 0\n0 0 0\n", "conversion_failed"),
])
def test_bad_mesh_input_fails_with_a_code_never_an_exception(cad_app, cad_pipeline, name, data, code):
    a = add_file(cad_app, data, name)
    with cad_pipeline() as p:
        (job,) = p.wait([a.job_id])
    assert job.status.value == "failed" and job.error_code == code, job.last_error
    assert "Traceback" not in (job.last_error or "")
    rec = get_file(cad_app.engine, a.file.id)
    assert rec.conversion_status == "failed"
    assert rec.conversion_error["code"] == code and rec.conversion_error["converter"] == "mesh"
    assert rec.conversion_error["stage"] in ("read", "mesh")
    assert rec.preview_path is None and rec.geometry_path is None


def test_zip_bomb_3mf_is_refused(cad_app, cad_pipeline, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("3D/3dmodel.model", b"<" + b" " * (64 * 1024 * 1024))
    a = add_file(cad_app, buf.getvalue(), "bomb.3mf")
    assert a.file.cad_format == "3mf"
    with cad_pipeline() as p:
        (job,) = p.wait([a.job_id])
    assert job.error_code == "conversion_failed" and "zip bomb" in job.last_error


def test_deleted_source_gives_source_missing(cad_app, cad_pipeline, meshes):
    a = add_file(cad_app, meshes["box.off"])
    cad_app.storage.delete(a.file.system_path.split(cad_app.storage.url("x")[:-1], 1)[1])
    with cad_pipeline() as p:
        (job,) = p.wait([a.job_id])
    assert job.error_code == "source_missing" and job.attempts == 1
    rec = get_file(cad_app.engine, a.file.id)
    assert rec.conversion_status == "failed" and rec.conversion_error["stage"] == "fetch"


def test_payload_errors_have_their_codes(cad_app, cad_pipeline):
    no_id = cad_app.submit("cad.convert", {})
    unknown = cad_app.submit("cad.convert", {"file_id": "no-such-file"})
    with cad_pipeline() as p:
        a, b = p.wait([no_id, unknown])
    assert a.error_code == "missing_file_id" and b.error_code == "file_not_found"


def test_stale_attempt_cannot_overwrite_the_file_row(cad_app, meshes):
    a = add_file(cad_app, meshes["box.off"])
    with cad_app.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == a.job_id).values(status="running", attempt_id=2))
    ok, _, _ = update_for_attempt(cad_app.engine, a.file.id, a.job_id, 1, {"preview_path": "jobs/x/1/stale.png"})
    assert not ok
    ok, _, _ = update_for_attempt(cad_app.engine, a.file.id, a.job_id, 2, {"preview_path": "jobs/x/2/live.png"})
    assert ok and get_file(cad_app.engine, a.file.id).preview_path == "jobs/x/2/live.png"


# ------------------------------------------------------------------ isolation

@pytest.mark.parametrize(("converter", "limit", "words"), [
    ("test.hang", {"CONVEYOR_CAD_TIME_LIMIT": "2"}, "time limit of 2s"),
    ("test.crash", {}, "SIGSEGV"),
    ("test.greedy", {"CONVEYOR_CAD_MEMORY_MB": "600"}, "memory"),
    ("test.raise", {}, "KeyError"),
])
@pytest.mark.parametrize("isolation", ["sandbox", "fork", "subprocess"])
def test_misbehaving_converter_is_contained_and_reported(cad_app, cad_pipeline, meshes, monkeypatch,
                                                         converter, limit, words, isolation):
    if isolation == "sandbox":
        from conveyor_cad.isolation import isolation_mode
        if isolation_mode(None, cad_app.plugins.registry("sandboxes"))[1] is None:
            if os.environ.get("CI"):
                pytest.fail("CI runs as root with namespaces: a conversion sandbox must be available")
            pytest.skip("no sandbox for conversions on this host")
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", isolation)
    for k, v in limit.items():
        monkeypatch.setenv(k, v)
    a = add_file(cad_app, meshes["box.off"], convert=False)
    job_id = cad_app.submit("cad.convert", {"file_id": a.file.id, "converter": converter}, file_id=a.file.id)
    with cad_pipeline() as p:
        (job,) = p.wait([job_id], timeout=60)
    assert job.status.value == "failed" and job.error_code == "conversion_failed" and job.attempts == 1
    assert words in job.last_error, job.last_error
    err = get_file(cad_app.engine, a.file.id).conversion_error
    assert err["converter"] == converter
    if converter == "test.crash":
        assert "corrupt entity #42" in err["output"]
    if converter == "test.hang":
        assert "reading forever" in err["output"]


def test_a_failed_stage_makes_the_result_partial(cad_app, cad_pipeline, meshes):
    a = add_file(cad_app, meshes["box.off"], convert=False)
    job_id = cad_app.submit("cad.convert", {"file_id": a.file.id, "converter": "test.partial"}, file_id=a.file.id)
    with cad_pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "succeeded" and job.result["status"] == "partial"
    rec = get_file(cad_app.engine, a.file.id)
    assert rec.conversion_status == "partial" and rec.preview_path is None
    assert glb_faces(cad_app.storage.get(rec.geometry_path)) == 12
    assert rec.conversion_error == {"code": "conversion_failed", "message": "renderer unavailable",
                                    "converter": "test.partial", "stage": "render"}
    preview = next(m for m in job.result["manifest"] if m["role"] == "preview")
    assert preview["status"] == "failed" and preview["messages"] == ["renderer unavailable"]


def _wait_processing(cad_app, file_id, timeout=30.0):
    """Until the file's conversion has started."""
    deadline = time.monotonic() + timeout
    while get_file(cad_app.engine, file_id).conversion_status != "processing":
        assert time.monotonic() < deadline, "the conversion never started"
        time.sleep(0.05)


def test_cancelling_a_conversion_kills_the_child_and_fails_the_file(cad_app, cad_pipeline, meshes, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_TIME_LIMIT", "60")
    a = add_file(cad_app, meshes["box.off"], convert=False)
    job_id = cad_app.submit("cad.convert", {"file_id": a.file.id, "converter": "test.hang"}, file_id=a.file.id)
    with cad_pipeline() as p:
        _wait_processing(cad_app, a.file.id)
        t0 = time.monotonic()
        cad_app.cancel(job_id, reason="user gave up")
        (job,) = p.wait([job_id], timeout=30)
    assert job.status.value == "cancelled" and time.monotonic() - t0 < 15
    rec = get_file(cad_app.engine, a.file.id)
    assert rec.conversion_status == "failed" and rec.conversion_error["code"] == "cancelled"


def test_gltf_with_external_buffers_uploaded_alone_says_what_to_upload(cad_app, cad_pipeline):
    import trimesh
    files = trimesh.Scene(trimesh.creation.box()).export(file_type="gltf")
    a = add_file(cad_app, files["model.gltf"], "model.gltf")
    assert a.file.cad_format == "gltf"
    with cad_pipeline() as p:
        (job,) = p.wait([a.job_id])
    assert job.error_code == "conversion_failed" and "upload a .glb" in job.last_error, job.last_error


def test_a_stale_attempt_finishing_late_leaves_the_file_row_alone(cad_app, cad_pipeline, meshes):
    a = add_file(cad_app, meshes["box.off"], convert=False)
    job_id = cad_app.submit("cad.convert", {"file_id": a.file.id, "converter": "test.slow"}, file_id=a.file.id)
    with cad_pipeline() as p:
        _wait_processing(cad_app, a.file.id)
        # another worker reclaimed the job: attempt 2 is now the live one
        with cad_app.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(attempt_id=2))
        deadline = time.monotonic() + 30
        while "stale_result" not in [e["action"] for e in cad_app.events(job_id)]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        p.worker.stop()
    rec = get_file(cad_app.engine, a.file.id)
    assert rec.preview_path is None and rec.geometry_path is None and rec.conversion_status == "processing"
    assert cad_app.storage.exists(f"jobs/{job_id}/1/preview.png")  # the stale attempt's own files, left for gc
