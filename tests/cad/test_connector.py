"""The connector converter against a real HTTP connector on loopback: routing, retries, failures."""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path

import fsspec
import pytest
from cad_support import TEST_PLUGINS, CadPipeline, assert_png, cad_env, glb_faces
from connector_server import TOKEN, ConnectorServer

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_cad.files import add_file, file_json, get_file
from conveyor_cad.routing import CadConfig


@pytest.fixture
def connector(monkeypatch):
    with ConnectorServer() as server:
        monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_URL", server.url)
        monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_TOKEN", TOKEN)
        monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_TIMEOUT", "5")
        monkeypatch.setenv("CONVEYOR_CAD_ROUTING", "stl=connector")
        yield server


def convert(app, pipeline, path, **kw):
    a = add_file(app, path, **kw)
    with pipeline() as p:
        (job,) = p.wait([a.job_id], timeout=120)
    return job, get_file(app.engine, a.file.id)


def test_connector_converts_and_its_artifacts_are_stored_as_ours(cad_app, cad_pipeline, connector, meshes):
    job, rec = convert(cad_app, cad_pipeline, meshes["box_binary.stl"], tenant="acme", org="plant-7")
    assert job.status.value == "succeeded", job.last_error
    assert job.result["converter"] == "connector" and rec.conversion_status == "done"
    (req,) = connector.requests
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["headers"]["X-Conveyor-Tenant"] == "acme" and req["headers"]["X-Conveyor-Org"] == "plant-7"
    assert req["fields"]["mode"] == "all" and req["fields"]["format"] == "stl"
    assert req["fields"]["file"] == meshes["box_binary.stl"].read_bytes()
    assert rec.geometry_path.startswith(f"jobs/{job.id}/1/") and rec.preview_path.startswith(f"jobs/{job.id}/1/")
    assert glb_faces(cad_app.storage.get(rec.geometry_path)) == 12
    served_png = next(v[0] for k, v in connector.artifacts.items() if k.endswith("preview.png"))
    assert cad_app.storage.get(rec.preview_path) == served_png
    preview = next(m for m in job.result["manifest"] if m["role"] == "preview")
    assert preview["sha256"] == hashlib.sha256(served_png).hexdigest()
    assert rec.attributes["connector_part"] == "box_binary.stl"
    assert rec.attributes["bbox"]["size"] == pytest.approx([20.0, 10.0, 5.0])


def test_gltf_with_a_separate_buffer_is_fetched_and_stored_as_glb(cad_app, cad_pipeline, connector, meshes):
    connector.behaviours.append("gltf")
    job, rec = convert(cad_app, cad_pipeline, meshes["box_ascii.stl"])
    assert job.status.value == "succeeded", job.last_error
    assert glb_faces(cad_app.storage.get(rec.geometry_path)) == 12


def test_ok_false_fails_at_once_with_connector_failed_and_the_reply(cad_app, cad_pipeline, connector, meshes):
    from conveyor.metrics import enable
    registry = enable().registry
    labels = {"format": "stl", "status": "failed"}
    before = registry.get_sample_value("conveyor_cad_conversions_total", labels) or 0.0
    connector.behaviours.append("refuse")
    job, rec = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert registry.get_sample_value("conveyor_cad_conversions_total", labels) == before + 1
    assert job.status.value == "failed" and job.error_code == "connector_failed" and job.attempts == 1
    assert "HTTP 200" in job.last_error and "license server refused" in job.last_error and "LICENSE" in job.last_error
    assert rec.conversion_status == "failed" and rec.conversion_error["converter"] == "connector"
    from conveyor.diagnostics import diagnose
    report = diagnose(cad_app, job.id)
    assert report["cause_code"] == "connector_failed" and "license server refused" in report["evidence"][0]


def test_5xx_retries_with_the_job_policy_then_succeeds(cad_app, cad_pipeline, connector, meshes):
    connector.behaviours.extend(["error500"])
    job, rec = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.status.value == "succeeded" and job.attempts == 2
    assert job.error_history[0]["code"] == "connector_failed" and "503" in job.error_history[0]["message"]
    assert rec.conversion_status == "done" and rec.geometry_path.startswith(f"jobs/{job.id}/2/")


def test_5xx_every_time_fails_after_max_attempts_with_a_body_excerpt(cad_app, cad_pipeline, connector, meshes):
    connector.behaviours.extend(["error500"] * 3)
    job, rec = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.status.value == "failed" and job.error_code == "connector_failed"
    assert job.attempts == job.max_attempts == 3
    assert "HTTP 503" in job.last_error and "converter pool exhausted" in job.last_error
    assert rec.conversion_status == "failed"


def test_timeout_is_a_retryable_connector_failure(cad_app, cad_pipeline, connector, meshes, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_TIMEOUT", "1.5")
    connector.hang_seconds = 4.0
    connector.behaviours.append("hang")
    job, rec = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.status.value == "succeeded" and job.attempts == 2
    assert "did not answer within 1.5s" in job.error_history[0]["message"]
    assert rec.conversion_status == "done"


def test_connector_geometry_without_faces_is_empty_geometry(cad_app, cad_pipeline, connector, meshes):
    connector.behaviours.append("empty")
    job, _ = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.status.value == "failed" and job.error_code == "empty_geometry"


def test_connector_then_local_falls_back_to_the_local_converter(cad_app, cad_pipeline, connector, meshes,
                                                                 monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_ROUTING", "stl=connector-then-local")
    connector.behaviours.append("refuse")
    job, rec = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.status.value == "succeeded" and job.result["converter"] == "mesh"
    assert any("connector failed (connector_failed" in w and "converted with mesh" in w
               for w in job.result["warnings"])
    assert_png(cad_app.storage.get(rec.preview_path))


def test_per_tenant_override_routes_only_that_tenant(cad_app, cad_pipeline, connector, meshes, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_ROUTING", "*=local")
    monkeypatch.setenv("CONVEYOR_CAD_TENANT_ROUTING", "acme:stl=connector|beta:*=local")
    job_a, _ = convert(cad_app, cad_pipeline, meshes["box_binary.stl"], tenant="acme")
    job_b, _ = convert(cad_app, cad_pipeline, meshes["box_binary.stl"], tenant="other")
    assert job_a.result["converter"] == "connector" and job_b.result["converter"] == "mesh"
    assert len(connector.requests) == 1


def test_unreachable_connector_is_retryable_and_names_the_url(cad_app, cad_pipeline, meshes, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CONVEYOR_CAD_ROUTING", "stl=connector")
    job, _ = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.error_code == "connector_failed" and job.attempts == 3
    assert "127.0.0.1:9/api/v1/convert unreachable" in job.last_error


@pytest.mark.parametrize(("env", "words"), [
    ({"CONVEYOR_CAD_ROUTING": "stl=cloud"}, "policy 'cloud'"),
    ({"CONVEYOR_CAD_ROUTING": "stl"}, "is not FORMAT=POLICY"),
    ({"CONVEYOR_CAD_TENANT_ROUTING": "stl=local"}, "TENANT:FORMAT=POLICY"),
    ({"CONVEYOR_CAD_TIME_LIMIT": "soon"}, "CONVEYOR_CAD_TIME_LIMIT must be float"),
])
def test_bad_routing_config_is_a_clear_error(env, words):
    from conveyor.errors import ConfigError
    with pytest.raises(ConfigError, match=words):
        CadConfig.load(env)


def test_routing_config_from_the_toml_file(tmp_path):
    cfg = tmp_path / "conveyor.toml"
    cfg.write_text('[conveyor]\ndb_url = "sqlite:///x.db"\n\n[cad]\nconnector_url = "http://c:8080"\n'
                   'routing = {step = "connector-then-local", dwg = "connector"}\n')
    c = CadConfig.load({"CONVEYOR_CONFIG": str(cfg), "CONVEYOR_CAD_CONNECTOR_URL": "http://env:1"})
    assert c.connector_url == "http://env:1"
    assert c.policy("step").value == "connector-then-local" and c.policy("stl").value == "local"


@pytest.fixture(scope="module")
def moto():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "s3"))
    from moto_support import MotoServer
    server = MotoServer()
    server.start()
    try:
        server.create_bucket("conveyor-cad-tests")
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("upload", ["auto", "url", "file"])
def test_s3_inputs_go_to_the_connector_as_a_presigned_url(tmp_path, connector, meshes, moto, monkeypatch, upload):
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_UPLOAD", upload)
    env = {**cad_env(f"sqlite:///{tmp_path}/s3.db", tmp_path),
           "CONVEYOR_STORAGE_URL": f"s3://conveyor-cad-tests/t{uuid.uuid4().hex[:8]}"}
    app = Conveyor(load_settings(env=env), plugins=load_plugins(TEST_PLUGINS))
    app.init_db()
    try:
        a = add_file(app, meshes["box_binary.stl"])
        assert a.file.system_path.startswith("s3://conveyor-cad-tests/")
        with CadPipeline(app) as p:
            (job,) = p.wait([a.job_id])
        assert job.status.value == "succeeded", job.last_error
        (req,) = connector.requests
        if upload == "file":
            assert "file_url" not in req["fields"] and req["fields"]["file"]
        else:
            assert "file" not in req["fields"]
            assert req["fields"]["file_url"].startswith(moto.endpoint) and "Signature" in req["fields"]["file_url"]
        rec = get_file(app.engine, a.file.id)
        with fsspec.open(file_json(app, rec)["geometry_url"], "rb", **_s3_options(moto)) as fh:
            assert fh.read(4) == b"glTF"
    finally:
        app.close()
        app.engine.dispose()


def _s3_options(moto):
    return {"key": moto.env()["AWS_ACCESS_KEY_ID"], "secret": moto.env()["AWS_SECRET_ACCESS_KEY"],
            "endpoint_url": moto.endpoint}


def test_url_upload_without_a_signing_storage_is_a_clear_error(cad_app, cad_pipeline, connector, meshes,
                                                                 monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_CONNECTOR_UPLOAD", "url")
    job, _ = convert(cad_app, cad_pipeline, meshes["box_binary.stl"])
    assert job.error_code == "connector_failed" and "cannot presign" in job.last_error and job.attempts == 1
    assert connector.requests == []


def test_a_worker_with_bad_cad_config_fails_the_job_with_the_variable_named(cad_app, cad_pipeline, meshes,
                                                                            monkeypatch):
    a = add_file(cad_app, meshes["box.off"])
    monkeypatch.setenv("CONVEYOR_CAD_ROUTING", "off=teleport")
    with cad_pipeline() as p:
        (job,) = p.wait([a.job_id])
    assert job.error_code == "internal_error" and job.attempts == 1
    assert "CONVEYOR_CAD_ROUTING" in job.last_error and "Traceback" not in job.last_error
