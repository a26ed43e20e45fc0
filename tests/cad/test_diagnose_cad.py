"""The CAD plugin's cause codes in `conveyor diagnose`, each from a situation made for real."""

from __future__ import annotations

from conveyor.diagnostics import diagnose
from conveyor_cad.files import add_file


def test_a_conversion_without_a_file_id_is_missing_file_id(cad_app):
    job = cad_app.submit("cad.convert", {})
    report = diagnose(cad_app, job)
    assert report["cause_code"] == "missing_file_id" and report["evidence"]


def test_another_tenants_file_is_file_not_found_and_not_shown(cad_app, meshes):
    theirs = add_file(cad_app, meshes["box_binary.stl"], tenant="globex", convert=False)
    job = cad_app.submit("cad.convert", {"file_id": theirs.file.id}, tenant="acme")
    report = diagnose(cad_app, job, tenant="acme")
    assert report["cause_code"] == "file_not_found"
    shown = " ".join(f"{f['detail']} {f.get('next_step')}" for f in report["findings"])
    assert theirs.file.system_path not in shown and "box_binary.stl" not in shown  # nothing of the other tenant's


def test_an_input_gone_from_storage_is_source_missing(cad_app, meshes):
    added = add_file(cad_app, meshes["box_binary.stl"], convert=False)
    key = added.file.system_path.split("/data/", 1)[1] if "/data/" in added.file.system_path else None
    assert key and cad_app.storage.exists(key)
    cad_app.storage.delete(key)  # what a retention run or an operator's mistake does
    job = cad_app.submit("cad.convert", {"file_id": added.file.id})
    report = diagnose(cad_app, job)
    assert report["cause_code"] == "source_missing", report["findings"]
    assert key in report["evidence"][0]
