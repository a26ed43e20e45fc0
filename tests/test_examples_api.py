"""The example host applications (examples/mini-oj, examples/mini-cad-service) over real HTTP.

Each app is imported from its folder, served by uvicorn on a loopback port with a dispatcher and
worker in threads, on the embedded default: a SQLite file, local storage and the sql queue.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from conveyor.api.auth import mint_token
from conveyor_sandbox.contract import DEFAULT_PATH

from pipeline_support import Pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "examples-api-tests-secret-0123456789abcdef"


def load_example(folder: str, name: str):
    """Import ``examples/{folder}/app.py`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Server:
    """uvicorn serving one ASGI app in a thread of the test process, on a free loopback port."""

    def __init__(self, asgi) -> None:
        self.config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                     timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The embedded default in a private folder: SQLite, local storage, the sql queue, an empty config file."""
    (tmp_path / "conveyor.toml").write_text("")
    return {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/conveyor.db", "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data",
            "CONVEYOR_QUEUE_URL": "sql", "CONVEYOR_CONFIG": str(tmp_path / "conveyor.toml"),
            "CONVEYOR_LEASE_SECONDS": "20", "CONVEYOR_RETRY_BASE_SECONDS": "0.05", **extra}


def poll(client: httpx.Client, path: str, done, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(path)
        assert r.status_code == 200, r.text
        if done(r.json()):
            return r.json()
        assert time.monotonic() < deadline, f"{path} still {r.json()} after {timeout}s"
        time.sleep(0.2)


@pytest.fixture
def judge_cache(monkeypatch):
    """A private judge cache under /var/tmp (sandbox uids must reach their work directories)."""
    cache = Path(f"/var/tmp/conveyor-examples-test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("CONVEYOR_JUDGE_CACHE", str(cache))
    monkeypatch.setenv("CONVEYOR_JUDGE_PATH", DEFAULT_PATH)
    yield cache
    from conveyor_sandbox.cleanup import CleanupError, remove_tree
    try:
        remove_tree(cache)
    except CleanupError as exc:
        print(f"judge cache {cache} not fully removed: {exc}")


def test_mini_oj_register_login_submit_accepted_and_leaderboard(tmp_path, judge_cache):
    from conveyor_judge.selftest import aplusb_package, program

    oj = load_example("mini-oj", "mini_oj_app")
    conveyor = oj.build_conveyor(embedded_env(tmp_path))
    try:
        with Server(oj.build_app(conveyor)) as url, httpx.Client(base_url=url, timeout=60) as http, \
                Pipeline(conveyor, concurrency=2):
            assert http.get("/oj/leaderboard").json() == []
            creds = {"root": "admin-password", "alice": "alice-password"}
            assert http.post("/oj/register", json={"name": "root", "password": creds["root"]}).json()["admin"]
            r = http.post("/oj/register", json={"name": "alice", "password": creds["alice"]})
            assert r.status_code == 201 and r.json() == {"name": "alice", "admin": False}
            assert http.post("/oj/register", json={"name": "alice", "password": "another-one"}).status_code == 409
            assert http.post("/oj/login", json={"name": "alice", "password": "wrong-password"}).status_code == 401
            tokens = {}
            for name, password in creds.items():
                r = http.post("/oj/login", json={"name": name, "password": password})
                assert r.status_code == 200, r.text
                tokens[name] = {"Authorization": f"Bearer {r.json()['token']}"}

            # the host's sessions are Conveyor identities through the conveyor_authenticate hook
            package = {"file": ("aplusb.zip", aplusb_package(), "application/zip")}
            refused = http.post("/api/v1/problems", files=package, headers=tokens["alice"])
            assert refused.status_code == 403, refused.text
            added = http.post("/api/v1/problems", files=package, data={"title": "A+B"}, headers=tokens["root"])
            assert added.status_code == 201, added.text
            pid = added.json()["id"]
            assert http.get("/api/v1/problems", headers={"Authorization": "Bearer oj_nope"}).status_code == 401
            assert http.post("/oj/submit", json={"problem_id": pid, "language": "cpp", "code": "x"}).status_code == 401

            r = http.post("/oj/submit", headers=tokens["alice"],
                          json={"problem_id": pid, "language": "c++", "code": program("cpp", "aplusb")})
            assert r.status_code == 201, r.text
            sub = r.json()
            with conveyor.engine.connect() as conn:  # the host's row names the job it was written with
                from sqlalchemy import select
                assert conn.execute(select(oj.submissions.c.job_id)
                                    .where(oj.submissions.c.id == sub["id"])).scalar() == sub["job_id"]
            assert http.get(sub["status_url"], headers=tokens["root"]).status_code == 404, "alice's own"
            with httpx.Client(base_url=url, headers=tokens["alice"], timeout=60) as as_alice:
                done = poll(as_alice, sub["status_url"], lambda b: b["status"] in ("succeeded", "failed", "cancelled"))
            assert (done["status"], done["verdict"], done["score"]) == ("succeeded", "accepted", 3.0), done
            status = http.get(f"/api/v1/status/{sub['job_id']}", headers=tokens["alice"]).json()
            assert status["verdict"] == "accepted" and status["sandbox"] == "c-sandbox"

            board = http.get("/oj/leaderboard").json()
            assert board == [{"rank": 1, "name": "alice", "solved": 1, "problems": [pid]}]
    finally:
        conveyor.close()
        conveyor.engine.dispose()


def test_mini_cad_service_upload_a_step_file_converted_with_a_preview(tmp_path):
    import conveyor_cad

    cad = load_example("mini-cad-service", "mini_cad_app")
    conveyor = cad.build_conveyor(embedded_env(tmp_path, CONVEYOR_JWT_SECRET=SECRET))
    step = Path(conveyor_cad.__file__).parent / "data" / "bracket.step"
    alice = {"Authorization": f"Bearer {mint_token(SECRET, 'alice', tenant='acme')}"}
    bob = {"Authorization": f"Bearer {mint_token(SECRET, 'bob', tenant='globex')}"}
    try:
        with Server(cad.build_app(conveyor)) as url, httpx.Client(base_url=url, timeout=60) as http, \
                Pipeline(conveyor, concurrency=2):
            files = {"file": ("bracket.step", step.read_bytes(), "model/step")}
            assert http.post("/cad/projects", data={"name": "Bracket"}, files=files).status_code == 401
            r = http.post("/cad/projects", data={"name": "Bracket"}, files=files, headers=alice)
            assert r.status_code == 201, r.text
            project = r.json()
            assert project["cad_format"] == "step" and project["owner"] == "alice" and project["job_id"]

            with httpx.Client(base_url=url, headers=alice, timeout=60) as as_alice:
                converted = poll(as_alice, f"/cad/projects/{project['id']}",
                                 lambda b: b["conversion_status"] not in ("pending", "processing"), timeout=50)
            assert converted["conversion_status"] == "done", converted
            assert [j["id"] for j in converted["jobs"]] == [project["job_id"]]
            preview = http.get(converted["links"]["preview"], headers=alice)
            assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
            assert preview.content.startswith(b"\x89PNG\r\n\x1a\n")
            geometry = http.get(converted["links"]["geometry"], headers=alice)
            assert geometry.status_code == 200 and geometry.content[:4] == b"glTF"
            listed = http.get(converted["links"]["jobs"], headers=alice).json()
            assert [j["id"] for j in listed["items"]] == [project["job_id"]], listed

            # another tenant sees neither the project nor its file
            assert http.get(f"/cad/projects/{project['id']}", headers=bob).status_code == 404
            assert http.get(converted["links"]["file"], headers=bob).status_code == 404
            assert http.get("/cad/projects", headers=bob).json() == []
    finally:
        conveyor.close()
        conveyor.engine.dispose()
