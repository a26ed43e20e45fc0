"""The CAD routes of the HTTP API over real HTTP (uvicorn on a loopback port, httpx), on SQLite and
PostgreSQL: upload, conversion by a real worker, downloads with ETags, tenancy, limits and refusals."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cad_support import TEST_PLUGINS, CadPipeline, assert_png, cad_env, glb_faces
from sqlalchemy import func, select, update

from conveyor.api.app import create_app
from conveyor.api.auth import mint_token
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor.schema import jobs
from conveyor_cad.samples import sample_path
from conveyor_cad.schema import files

SECRET = "cad-api-test-secret-0123456789abcdef0123"
PNG = b"\x89PNG\r\n\x1a\n"
LIMIT = 3 * 1024 * 1024  # above the route's 1 MiB write chunk, so a refused upload has written something
FINAL_STATUSES = ("done", "partial", "failed", "unsupported")


class Server:
    """uvicorn serving one ASGI app in a thread of the test process, on a free loopback port."""

    def __init__(self, asgi) -> None:
        self.config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                     timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def token(sub: str, *, tenant: str = "acme", org: str | None = None, admin: bool = False) -> str:
    return mint_token(SECRET, sub, tenant=tenant, org=org, roles=["admin"] if admin else [], ttl_s=600)


def auth(tok: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", **headers}


@contextmanager
def serve(db_url: str, tmp_path: Path, **settings):
    """A CAD deployment on ``db_url`` with a low upload limit, served over HTTP: (app, base URL, data dir)."""
    env = {**cad_env(db_url, tmp_path), "CONVEYOR_JWT_SECRET": SECRET}
    app = Conveyor(load_settings(env=env).with_(max_upload_bytes=LIMIT, **settings),
                   plugins=load_plugins(TEST_PLUGINS))
    app.init_db()
    try:
        with Server(create_app(app)) as srv:
            yield app, srv.url, tmp_path / "data"
    finally:
        app.close()
        app.engine.dispose()


@pytest.fixture
def cad_api(db_url, tmp_path):
    """``serve`` on SQLite and on PostgreSQL."""
    with serve(db_url, tmp_path) as deployment:
        yield deployment


def _error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def _counts(app) -> tuple[int, int]:
    with app.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(files)).scalar_one(),
                conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def _stored(data_dir: Path) -> list[str]:
    """Every entry (files and folders) under the storage's ``files/`` prefix."""
    root = data_dir / "files"
    found: list[str] = []
    # os.walk skips a folder removed while it is being listed (the server removes them concurrently)
    for folder, dirs, names in os.walk(root):
        found += [str((Path(folder) / n).relative_to(root)) for n in dirs + names]
    return sorted(found)


def _settle(data_dir: Path, expected: list[str], timeout: float = 10) -> None:
    """Wait until storage holds exactly ``expected`` under ``files/`` (a refused upload is removed after
    its answer went out)."""
    deadline = time.monotonic() + timeout
    while _stored(data_dir) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _stored(data_dir) == expected


def _upload(client: httpx.Client, name: str, data: bytes, headers: dict) -> httpx.Response:
    return client.post("/files", files={"file": (name, data, "application/octet-stream")}, headers=headers)


def _wait_job(client: httpx.Client, job_id: str, headers: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.05)


def _wait_converted(client: httpx.Client, file_id: str, headers: dict, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/file/{file_id}", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["conversion_status"] in FINAL_STATUSES:
            return body
        assert time.monotonic() < deadline, f"file {file_id} still {body['conversion_status']}"
        time.sleep(0.1)


# ---------------------------------------------------------------- the whole path

def test_upload_convert_and_download_with_etags_tenancy_and_admin_fields(cad_api):
    app, url, data_dir = cad_api
    alice = auth(token("alice", tenant="acme", org="eng"))
    step = sample_path("bracket.step").read_bytes()
    broken = b"ISO-10303-21;\nHEADER;\nENDSEC;\nDATA;\n#1=GARBAGE(;\nENDSEC;\nEND-ISO-10303-21;\n"
    with CadPipeline(app), httpx.Client(base_url=url + "/api/v1", timeout=60) as c:
        r = _upload(c, "bracket.step", step, alice)
        assert r.status_code == 201, r.text
        up = r.json()
        file_id = up["id"]
        assert r.headers["location"] == f"/api/v1/file/{file_id}"
        assert up["filename"] == "bracket.step" and up["cad_format"] == "step"
        assert up["size"] == len(step) and up["sha256"] == hashlib.sha256(step).hexdigest()
        assert up["tenant_id"] == "acme" and up["org_id"] == "eng"
        assert up["conversion_status"] in ("pending", "processing", "done")
        assert up["job_id"] and up["job_ids"] == [up["job_id"]]
        assert not {"system_path", "preview_path", "geometry_path"} & set(up)

        bad = _upload(c, "broken.step", broken, alice)
        assert bad.status_code == 201, bad.text

        done = _wait_converted(c, file_id, alice)
        assert done["conversion_status"] == "done", done
        assert done["conversion_error"] is None
        assert done["preview_url"] == f"/api/v1/file/{file_id}/preview"
        assert done["geometry_url"] == f"/api/v1/file/{file_id}/geometry"
        assert done["job_id"] == up["job_id"] and done["job_ids"] == [up["job_id"]]
        assert done["attributes"]["units"] and done["attributes"]["bbox"]
        assert not {"system_path", "preview_path", "geometry_path"} & set(done)

        # the row and the job carry the caller's tenant and org; the stored input is the upload
        with app.engine.connect() as conn:
            row = conn.execute(select(files).where(files.c.id == file_id)).one()
            job = conn.execute(select(jobs).where(jobs.c.id == up["job_id"])).one()
        assert (row.tenant_id, row.org_id) == ("acme", "eng")
        assert (job.tenant_id, job.org_id, job.file_id, job.kind) == ("acme", "eng", file_id, "cad.convert")
        assert (data_dir / "files" / file_id / "bracket.step").read_bytes() == step

        # downloads: right type, the artifact's sha256 as ETag, 304 for a current tag
        preview = c.get(f"/file/{file_id}/preview", headers=alice)
        assert preview.status_code == 200, preview.text
        assert preview.headers["content-type"] == "image/png"
        assert preview.content.startswith(PNG)
        assert_png(preview.content)
        assert re.fullmatch(r'"[0-9a-f]{64}"', preview.headers["etag"])
        assert int(preview.headers["content-length"]) == len(preview.content)
        geometry = c.get(f"/file/{file_id}/geometry", headers=alice)
        assert geometry.status_code == 200, geometry.text
        assert geometry.headers["content-type"] == "model/gltf-binary"
        magic, version, length = struct.unpack_from("<4sII", geometry.content)
        assert (magic, version, length) == (b"glTF", 2, len(geometry.content))
        assert glb_faces(geometry.content) > 0
        assert re.fullmatch(r'"[0-9a-f]{64}"', geometry.headers["etag"])
        assert geometry.headers["etag"] != preview.headers["etag"]
        for resp, path in ((preview, "preview"), (geometry, "geometry")):
            tag = resp.headers["etag"]
            for header in (tag, f"W/{tag}", f'"nope", {tag}', "*"):
                again = c.get(f"/file/{file_id}/{path}", headers={**alice, "If-None-Match": header})
                assert again.status_code == 304, (header, again.text)
                assert again.content == b"" and again.headers["etag"] == tag
            fresh = c.get(f"/file/{file_id}/{path}", headers={**alice, "If-None-Match": '"stale"'})
            assert fresh.status_code == 200 and fresh.content == resp.content and fresh.headers["etag"] == tag

        # the file's jobs through the core's job list (the row is done just before the job is finalized)
        _wait_job(c, up["job_id"], alice)
        listed = c.get("/jobs", params={"file_id": file_id}, headers=alice).json()["items"]
        assert [(j["id"], j["kind"], j["status"], j["tenant_id"], j["org_id"]) for j in listed] == \
            [(up["job_id"], "cad.convert", "succeeded", "acme", "eng")]
        # the job's result lists the artifacts, without where they are stored
        mine = c.get(f"/jobs/{up['job_id']}", headers=alice).json()["result"]["manifest"]
        assert {d["role"] for d in mine} == {"preview", "geometry", "metadata"}
        assert all("path" not in d and d["sha256"] for d in mine if d["status"] == "ok"), mine
        assert all("path" not in d for d in listed[0]["result"]["manifest"])

        # a failed conversion: no derivatives (not_converted), its error without the system's details
        failed = _wait_converted(c, bad.json()["id"], alice)
        assert failed["conversion_status"] in ("failed", "unsupported"), failed
        assert failed["preview_url"] is None and failed["geometry_url"] is None
        assert set(failed["conversion_error"]) <= {"code", "message", "converter", "stage"}
        assert failed["conversion_error"]["code"] in ("conversion_failed", "empty_geometry")
        for path in ("preview", "geometry"):
            err = _error(c.get(f"/file/{failed['id']}/{path}", headers=alice), 404, "not_converted")
            assert err["detail"] == {"conversion_status": failed["conversion_status"]}

        # admins see the storage paths; the tenant's own admin and a '*' admin alike
        for admin in (auth(token("ops", tenant="acme", admin=True)), auth(token("root", tenant="*", admin=True))):
            seen = c.get(f"/file/{file_id}", headers=admin).json()
            assert seen["system_path"] == app.storage.url(f"files/{file_id}/bracket.step")
            assert seen["preview_path"].startswith(f"jobs/{up['job_id']}/")
            assert seen["preview_path"].endswith("/preview.png")
            assert seen["geometry_path"].endswith("/model.glb")
            # the tag names the per-attempt key, so it changes when a reconversion writes new artifacts
            assert preview.headers["etag"] == f'"{hashlib.sha256(seen["preview_path"].encode()).hexdigest()}"'
            assert geometry.headers["etag"] == f'"{hashlib.sha256(seen["geometry_path"].encode()).hexdigest()}"'
            assert {k: seen[k] for k in done} == done
            ops_view = c.get(f"/jobs/{up['job_id']}", headers=admin).json()["result"]["manifest"]
            assert {d["role"]: d["path"] for d in ops_view}["preview"] == seen["preview_path"]
            failed_seen = c.get(f"/file/{failed['id']}", headers=admin).json()
            assert "isolation" in failed_seen["conversion_error"]

        # another tenant, another org of the tenant, a missing id and ids that cannot be ids: the same 404
        outsiders = (auth(token("bob", tenant="globex")), auth(token("eve", tenant="acme", org="ops")),
                     auth(token("mallory", tenant="globex", admin=True)))
        missing = _error(c.get("/file/00000000-0000-4000-8000-000000000000", headers=alice), 404, "not_found")
        for who in outsiders:
            for path in ("", "/preview", "/geometry"):
                assert _error(c.get(f"/file/{file_id}{path}", headers=who), 404, "not_found") == missing
                assert _error(c.get(f"/file/{file_id}{path}", headers={**who, "If-None-Match": "*"}), 404,
                              "not_found") == missing
            assert c.get("/jobs", params={"file_id": file_id}, headers=who).json()["items"] == []
        for odd in ("x" * 300, "%00", "caf%C3%A9", "%20", "1%0a2", "-1", "null", "%FF"):
            for path in ("", "/preview", "/geometry"):
                assert _error(c.get(f"/file/{odd}{path}", headers=alice), 404, "not_found") == missing
        for path in ("", "/preview", "/geometry"):  # a slash makes it another route: still 404
            _error(c.get(f"/file/a%2Fb{path}", headers=alice), 404, "not_found")
        for path in ("", "/preview", "/geometry"):
            _error(c.get(f"/file/{file_id}{path}"), 401, "unauthorized")


# ---------------------------------------------------------------- refusals (no worker runs)

def _multipart(boundary: str, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def _file_part(name: str = "file", filename: str | None = "part.stl", data: bytes = b"solid a\nendsolid a\n"
               ) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"Content-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data


def test_refused_uploads_write_nothing(cad_api, meshes):
    app, url, data_dir = cad_api
    alice = auth(token("alice"))
    stl = meshes["box_binary.stl"].read_bytes()
    with httpx.Client(base_url=url + "/api/v1", timeout=60) as c:
        # accepted: a binary STL, and a 3MF under a name that does not say so (the zip is read from storage)
        ok = _upload(c, "box.stl", stl, alice)
        assert ok.status_code == 201, ok.text
        three = _upload(c, "upload.bin", meshes["box.3mf"].read_bytes(), alice)
        assert three.status_code == 201 and three.json()["cad_format"] == "3mf", three.text
        accepted = _counts(app)
        assert accepted == (2, 2)
        stored = _stored(data_dir)
        assert len(stored) == 4  # two folders, two files

        # no worker: the preview is not there yet
        err = _error(c.get(f"/file/{ok.json()['id']}/preview", headers=alice), 404, "not_converted")
        assert err["detail"] == {"conversion_status": "pending"}

        # what a failure tells a caller without the admin role: no storage location, no system details
        ok_id, three_id = ok.json()["id"], three.json()["id"]
        system_path = app.storage.url(f"files/{ok_id}/box.stl")
        errors = {ok_id: {"code": "source_missing", "message": f"the input {system_path} is not in storage",
                          "converter": None, "stage": "fetch", "output": "worker chatter", "isolation": "fork"},
                  three_id: {"code": "lease_lost", "message": "lease of worker-7 on host db-3 expired",
                             "converter": "mesh", "stage": "read"}}
        with app.engine.begin() as conn:
            for fid, error in errors.items():
                conn.execute(update(files).where(files.c.id == fid).values(conversion_status="failed",
                                                                           conversion_error=error))
        shown = c.get(f"/file/{ok_id}", headers=alice).json()["conversion_error"]
        assert shown == {"code": "source_missing", "message": "the input box.stl is not in storage",
                         "converter": None, "stage": "fetch"}
        shown = c.get(f"/file/{three_id}", headers=alice).json()["conversion_error"]
        assert "worker-7" not in shown["message"] and shown["code"] == "lease_lost"
        admin = auth(token("ops", admin=True))
        assert c.get(f"/file/{ok_id}", headers=admin).json()["conversion_error"] == errors[ok_id]
        err = _error(c.get(f"/file/{ok_id}/geometry", headers=alice), 404, "not_converted")
        assert err["detail"] == {"conversion_status": "failed"}

        # past CONVEYOR_MAX_UPLOAD_BYTES, streamed without a length: 413 before the client is done
        boundary = "conveyor-test-boundary"
        sent = 0
        total = 64 * 1024 * 1024

        def stream():
            nonlocal sent
            yield b"--" + boundary.encode() + b"\r\n" + _file_part(filename="huge.stl", data=b"")
            chunk = b"solid big\n" + b"x" * (64 * 1024 - 10)
            while sent < total:
                sent += len(chunk)
                yield chunk
            yield b"\r\n--" + boundary.encode() + b"--\r\n"

        r = c.post("/files", content=stream(), headers={**alice, "content-type": f"multipart/form-data; "
                                                                                 f"boundary={boundary}"})
        err = _error(r, 413, "request_too_large")
        assert err["detail"] == {"limit": LIMIT}
        assert sent < total, "the server read the whole stream before refusing it"
        _settle(data_dir, stored)  # the megabytes written before the limit are removed
        assert _counts(app) == accepted
        # ... and with a declared length
        big = _multipart(boundary, _file_part(filename="big.stl", data=b"solid b\n" + b"y" * LIMIT))
        _error(c.post("/files", content=big, headers={**alice, "content-type": f"multipart/form-data; "
                                                                               f"boundary={boundary}"}),
               413, "request_too_large")

        # malformed bodies: 422 invalid_request with the error shape
        mp = {**alice, "content-type": f"multipart/form-data; boundary={boundary}"}
        malformed = [
            (b"{}", {**alice, "content-type": "application/json"}),
            (b"file=x", {**alice, "content-type": "application/x-www-form-urlencoded"}),
            (_multipart(boundary, _file_part()), {**alice, "content-type": "multipart/form-data"}),
            (b"this is not multipart at all", mp),
            (b"", mp),
            (_multipart(boundary, _file_part(data=stl), close=False), mp),  # truncated: no closing boundary
            (_multipart(boundary, _file_part(data=stl))[:-200], mp),  # cut inside the file
            (_multipart(boundary, _file_part(name="note", filename=None, data=b"hello")), mp),  # no file part
            (_multipart(boundary, _file_part(filename=None)), mp),  # no filename
            (_multipart(boundary, _file_part(filename="")), mp),
            (_multipart(boundary, _file_part(filename="a\x01b.stl")), mp),
            (_multipart(boundary, _file_part(filename="x" * 300 + ".stl")), mp),
            (_multipart(boundary, _file_part(), _file_part(filename="second.stl")), mp),  # two files
            (_multipart(boundary, b"Content-Type: text/plain\r\n\r\nno disposition"), mp),
            (_multipart(boundary, *[_file_part(name=f"f{i}", filename=None) for i in range(40)]), mp),
            (_multipart(boundary, b"X-Long: " + b"h" * 20000 + b"\r\n" + _file_part()), mp),
        ]
        for body, headers in malformed:
            err = _error(c.post("/files", content=body, headers=headers), 422, "invalid_request")
            assert isinstance(err["message"], str)

        # bytes no converter reads
        junk = hashlib.sha512(b"no format").digest().replace(b"\n", b"") * 64  # no lines, no magic
        err = _error(_upload(c, "mystery.bin", junk, alice), 415, "unsupported_format")
        assert "mystery.bin" in err["message"] and err["detail"] == {"cad_format": None}
        _error(_upload(c, "notes.txt", b"just some text\n", alice), 415, "unsupported_format")

        # an all-tenants admin must say which tenant to write in; no token is 401
        root = auth(token("root", tenant="*", admin=True))
        _error(_upload(c, "box.stl", stl, root), 422, "invalid_request")
        _error(_upload(c, "box.stl", stl, {}), 401, "unauthorized")
        assert _upload(c, "box.stl", stl, {**root, "x-tenant-id": "globex"}).json()["tenant_id"] == "globex"

    assert _counts(app) == (accepted[0] + 1, accepted[1] + 1)
    assert len(_stored(data_dir)) == len(stored) + 2


def test_a_client_that_leaves_mid_upload_leaves_nothing(cad_api):
    app, url, data_dir = cad_api
    boundary = "conveyor-test-boundary"
    head = b"--" + boundary.encode() + b"\r\n" + _file_part(filename="gone.stl", data=b"")
    request = (f"POST /api/v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token('alice')}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {LIMIT - 1000}\r\n\r\n"
               ).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request + head + b"solid a\n" + b"z" * (2 * 1024 * 1024))  # past the 1 MiB write chunk
        deadline = time.monotonic() + 10
        while not _stored(data_dir) and time.monotonic() < deadline:  # the partial object exists ...
            time.sleep(0.02)
        assert _stored(data_dir), "the upload was not being written to storage"
    deadline = time.monotonic() + 10
    while _stored(data_dir) and time.monotonic() < deadline:  # ... and is removed once the client is gone
        time.sleep(0.02)
    assert _stored(data_dir) == []
    assert _counts(app) == (0, 0)


def test_upload_streams_to_storage_in_chunks(cad_api, monkeypatch):
    """The route never holds the file: what it writes per call is bounded, whatever the file's size."""
    from conveyor_cad import api as cad_routes

    app, url, _ = cad_api
    writes: list[int] = []
    original = cad_routes._Upload._write

    def spy(self, data):
        writes.append(len(data))
        return original(self, data)

    monkeypatch.setattr(cad_routes._Upload, "_write", spy)
    payload = b"solid s\n" + b"facet normal 0 0 1\n" * ((LIMIT - 4096) // 19)
    with httpx.Client(base_url=url + "/api/v1", timeout=60) as c:
        r = _upload(c, "tall.stl", payload, auth(token("alice")))
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(payload) and r.json()["sha256"] == hashlib.sha256(payload).hexdigest()
    assert sum(writes) == len(payload) and len([w for w in writes if w]) >= 2
    assert max(writes) < cad_routes.WRITE_CHUNK + 256 * 1024
    rec_key = f"files/{r.json()['id']}/tall.stl"
    assert app.storage.get(rec_key) == payload


def test_a_quota_refusal_keeps_neither_row_nor_bytes(db_url, tmp_path):
    with serve(db_url, tmp_path, tenant_max_active_jobs=1) as (app, url, data_dir), \
            httpx.Client(base_url=url + "/api/v1", timeout=60) as c:
        alice = auth(token("alice"))
        assert _upload(c, "a.stl", b"solid a\nendsolid a\n", alice).status_code == 201
        stored = _stored(data_dir)
        r = _upload(c, "b.stl", b"solid b\nendsolid b\n", alice)
        _error(r, 429, "quota_exceeded")
        assert int(r.headers["retry-after"]) >= 1
        assert _counts(app) == (1, 1)
        _settle(data_dir, stored)


def test_a_worker_without_the_api_extra_loads_the_plugin_and_converts(tmp_path):
    """The routes module is imported by the hook only: without FastAPI the plugin still loads and works."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('fastapi', 'uvicorn', 'starlette', 'python_multipart', 'multipart'):\n"
            "    sys.modules[m] = None\n"
            "from conveyor.app import Conveyor\n"
            "from conveyor_cad.files import add_file\n"
            "app = Conveyor(); app.init_db()\n"
            "assert 'cad' in app.plugins.infos and 'cad' not in app.plugins.errors, app.plugins.errors\n"
            "assert 'conveyor_api_routes' in app.plugins.infos['cad'].hooks\n"
            "added = add_file(app, b'solid a\\nendsolid a\\n', 'a.stl')\n"
            "print(added.file.cad_format, app.get(added.job_id).kind)\n")
    env = {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/c.db", "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data",
           "CONVEYOR_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "none.toml").write_text("")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["stl", "cad.convert"]


def test_a_storage_failure_is_503_and_leaves_nothing(cad_api, monkeypatch):
    from conveyor_cad import api as cad_routes

    app, url, data_dir = cad_api
    original = cad_routes._Upload._write
    calls = []

    def failing(self, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(cad_routes._Upload, "_write", failing)
    payload = b"solid s\n" + b"facet normal 0 0 1\n" * ((LIMIT - 4096) // 19)
    with httpx.Client(base_url=url + "/api/v1", timeout=60) as c:
        r = _upload(c, "tall.stl", payload, auth(token("alice")))
    err = _error(r, 503, "unavailable")
    assert "storage" in err["message"] and "No space" not in err["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert len(calls) == 2
    _settle(data_dir, [])
    assert _counts(app) == (0, 0)
