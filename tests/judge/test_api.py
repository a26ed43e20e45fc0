"""The judge's HTTP routes over real HTTP: uvicorn on a loopback port, httpx, a worker judging in the real sandbox.

Problems are added by admins as multipart uploads (refused with their catalog codes), submissions take the
online-judge shape ``{"problem_id", "language", "code", "time_limit", "memory_limit"}`` and ``/status`` shows
exactly what the feedback policy lets a submitter see, to the submitter's tenant only.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
import zipfile

import httpx
import pytest
import uvicorn

from conveyor.api.app import create_app
from conveyor.api.auth import mint_token
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_judge import unpack
from conveyor_judge.selftest import aplusb_package, program

from pipeline_support import Pipeline

SECRET = "judge-api-tests-secret-0123456789abcdef"
#: answers long enough that finding one in an answer means it leaked
TESTS = ((123456789, 987654321), (40000, 2), (7, 35))
HIDDEN_ANSWER = "1111111110"


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
        return f"http://127.0.0.1:{port}/api/v1"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def client(url: str, sub: str, tenant: str, admin: bool = False) -> httpx.Client:
    tok = mint_token(SECRET, sub, tenant=tenant, roles=["admin"] if admin else [], ttl_s=900)
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tok}"}, timeout=60)


@pytest.fixture
def deployment(env):
    """A Conveyor with the judge plugin (entry points) on a fresh database, served over real HTTP."""
    settings = load_settings(env={**env, "CONVEYOR_JWT_SECRET": SECRET})
    app = Conveyor(settings, plugins=load_plugins(settings.plugins))
    app.init_db()
    with Server(create_app(app)) as url:
        yield app, url
    app.close()
    app.engine.dispose()


def upload(c: httpx.Client, package: bytes, **fields) -> httpx.Response:
    return c.post("/problems", files={"file": ("problem.zip", package, "application/zip")},
                  data={k: str(v) for k, v in fields.items()})


def wait_status(c: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/status/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["finished"]:
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body['status']} after {timeout}s"
        time.sleep(0.2)


def zip_of(files: dict[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_admin_adds_a_problem_and_a_submitter_gets_verdicts_of_its_own_tenant(deployment):
    app, url = deployment
    with client(url, "root", "acme", admin=True) as admin, client(url, "alice", "acme") as alice, \
            client(url, "bob", "globex") as bob:
        package = aplusb_package(tests=TESTS)
        refused = upload(alice, package, title="A+B")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        added = upload(admin, package, title="A+B", time_limit=1000, memory_limit=64)
        assert added.status_code == 201, added.text
        pid = added.json()["id"]
        assert added.headers["location"] == f"/api/v1/problems/{pid}"

        problem = alice.get(f"/problems/{pid}")
        assert problem.status_code == 200, problem.text
        shown = problem.json()
        assert shown["title"] == "A+B" and shown["tests"] == 3 and shown["samples"] == []
        assert (shown["time_limit"], shown["memory_limit"], shown["feedback"]) == (1000, 64, "verdict+time")
        assert HIDDEN_ANSWER not in problem.text
        assert [p["id"] for p in alice.get("/problems").json()["items"]] == [pid]

        with Pipeline(app, concurrency=2) as _:
            ac = alice.post("/submit", json={"problem_id": pid, "language": 1, "code": program("cpp", "aplusb"),
                                             "time_limit": 1000, "memory_limit": 256})
            assert ac.status_code == 201, ac.text
            queued = ac.json()
            assert queued["status"] == "queued" and queued["language"] == "cpp"
            assert (queued["time_limit"], queued["memory_limit"]) == (1000, 64), "capped to the problem's"
            assert ac.headers["location"] == f"/api/v1/status/{queued['job_id']}"
            wa = alice.post("/submit", json={"problem_id": pid, "language": "c++", "code": program("cpp", "wa")})
            assert wa.status_code == 201, wa.text
            accepted = wait_status(alice, queued["job_id"])
            wrong = wait_status(alice, wa.json()["job_id"])

        assert accepted["status"] == "succeeded", accepted
        assert (accepted["verdict"], accepted["verdict_short"], accepted["verdict_label"]) == \
            ("accepted", "AC", "Accepted")
        assert accepted["score"] == accepted["max_score"] == 3.0
        assert [t["verdict"] for t in accepted["tests"]] == ["accepted"] * 3
        assert accepted["problem_id"] == pid and accepted["language"] == "cpp"
        assert accepted["sandbox"] == "c-sandbox", "judged in the real sandbox"

        assert (wrong["verdict"], wrong["verdict_short"]) == ("wrong_answer", "WA")
        assert wrong["tests"][0]["verdict"] == "wrong_answer" and wrong["tests"][0]["message"] == "Wrong Answer"
        wrong_text = alice.get(f"/status/{wrong['job_id']}").text
        assert HIDDEN_ANSWER not in wrong_text and "expected" not in wrong_text.lower()
        assert "output_preview" not in wrong["tests"][0] and "admin" not in wrong

        # the source lives in the submitter's tenant's key space and the job in its tenant
        job = app.get(queued["job_id"])
        assert job.tenant_id == "acme" and job.payload["source_key"].startswith("submissions/acme/")
        assert app.storage.get(job.payload["source_key"]) == program("cpp", "aplusb").encode()

        # another tenant: the same 404 as for a job that does not exist
        foreign, missing = bob.get(f"/status/{queued['job_id']}"), bob.get(f"/status/{uuid.uuid4()}")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json() == {"error": {"code": "not_found", "message": "no such job",
                                                              "detail": None}}

        # the full record is for admins only
        denied = alice.get(f"/status/{wrong['job_id']}", params={"admin": "true"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        full = admin.get(f"/status/{wrong['job_id']}", params={"admin": "true"})
        assert full.status_code == 200, full.text
        assert HIDDEN_ANSWER in full.json()["admin"]["tests"][0]["message"]


def test_submissions_are_refused_with_the_judges_codes(deployment):
    app, url = deployment
    with client(url, "root", "acme", admin=True) as admin, client(url, "alice", "acme") as alice:
        pid = upload(admin, aplusb_package()).json()["id"]
        base = {"problem_id": pid, "code": program("cpp", "aplusb")}
        for language in ("brainfuck", 99, "0"):
            r = alice.post("/submit", json={**base, "language": language})
            assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_language", (language, r.text)
        for language in (True, 1.5, None, ["cpp"]):
            r = alice.post("/submit", json={**base, "language": language})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (language, r.text)
        for problem_id in ("0123456789ab", "not-a-problem"):
            r = alice.post("/submit", json={**base, "problem_id": problem_id, "language": "cpp"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "problem_not_found", r.text
            assert app.storage.base_url not in r.text, "the storage is nobody's business"
        langs = {lang["id"]: lang for lang in alice.get("/languages").json()["items"]}
        assert "1" in langs["cpp"]["aliases"] and "python3" in langs
        r = alice.post("/submit", json={**base, "language": "cpp", "code": "/" * ((1 << 20) + 1)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "source_too_large", r.text
        for extra in ({"time_limit": 0}, {"memory_limit": -1}, {"time_limit": "1000"}, {"user": "x"}):
            r = alice.post("/submit", json={**base, "language": "cpp", **extra})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (extra, r.text)
        r = alice.post("/submit", content=b'{"problem_id": "%s", "language": "cpp", "code": "\\ud800"}' % pid.encode(),
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
        assert httpx.post(f"{url}/submit", json={**base, "language": "cpp"}).status_code == 401
        # nothing was stored or queued by a refusal
        assert list(app.storage.list("submissions")) == [] and app.list_jobs() == []

        assert alice.get("/problems/0123456789ab").json()["error"]["code"] == "problem_not_found"
        # /status knows judge submissions only
        echo = app.submit("conveyor.echo", {"x": 1}, tenant="acme")
        assert alice.get(f"/status/{echo}").json() == alice.get(f"/status/{uuid.uuid4()}").json()
        assert alice.get(f"/status/{echo}").status_code == 404


def test_bad_packages_get_their_catalog_codes_and_store_nothing(deployment, monkeypatch):
    app, url = deployment
    lzma_bomb = zip_of({"1.in": b"\0" * (32 << 20), "1.out": b"0\n"}, zipfile.ZIP_LZMA)
    assert len(lzma_bomb) < 100_000
    cases = [
        (b"this is not a zip at all" * 10, "invalid_problem_package"),
        (zip_of({"../1.in": "1 2\n", "../1.out": "3\n"}), "unsafe_problem_package"),
        (lzma_bomb, "problem_package_too_large"),
        (zip_of({"1.in": "1 2\n"}), "invalid_problem_package"),
        (zip_of({"1.in": "1 2\n", "1.out": "3\n", "problem.toml": "samples = ['9']\n"}), "invalid_problem_package"),
        (zip_of({"1.in": "1 2\n", "1.out": "3\n", "problem.toml": "time_limit_ms = inf\n"}),
         "invalid_problem_package"),
    ]
    with client(url, "root", "acme", admin=True) as admin:
        for package, code in cases:
            r = upload(admin, package)
            assert r.status_code == 422 and r.json()["error"]["code"] == code, (code, r.text)
        good = aplusb_package()
        for fields in ({"time_limit": 0}, {"time_limit": 60001}, {"memory_limit": "lots"}, {"feedback": "all"},
                       {"title": "x" * 201}):
            r = upload(admin, good, **fields)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (fields, r.text)
        r = admin.post("/problems", data={"title": "no file"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text

        # a zip larger than any package within the unpack bounds: 413 while it is read, or at once from its length
        monkeypatch.setenv("CONVEYOR_JUDGE_MAX_UNPACKED_MB", "1")
        monkeypatch.setattr(unpack, "ZIP_OVERHEAD_BYTES", 64 << 10)
        noise = uuid.uuid4().bytes * 100_000  # 1.6 MB, stored uncompressed
        for size, said in ((1_200_000, "the package is larger than"), (1_600_000 * 2, "the request is")):
            big = zip_of({"1.in": (noise * 2)[:size], "1.out": "0\n"}, zipfile.ZIP_STORED)
            r = upload(admin, big)
            assert r.status_code == 413 and r.json()["error"]["code"] == "problem_package_too_large", r.text
            assert r.json()["error"]["message"].startswith(said) and r.json()["error"]["detail"] == {
                "limit": (1 << 20) + (64 << 10)}
    assert list(app.storage.list("problems")) == []


def test_samples_are_public_and_submission_limits_are_capped_to_the_problems(deployment):
    app, url = deployment
    kattis = zip_of({"data/sample/1.in": "1 2\n", "data/sample/1.ans": "3\n",
                     "data/secret/1.in": "123456789 987654321\n", "data/secret/1.ans": f"{HIDDEN_ANSWER}\n"})
    plain = aplusb_package("samples = ['1']\n", tests=TESTS)
    with client(url, "root", "acme", admin=True) as admin, client(url, "carol", "acme") as carol:
        added = upload(admin, kattis, time_limit=300, memory_limit=64, feedback="verdict+time")
        assert added.status_code == 201, added.text
        pid = added.json()["id"]
        shown = carol.get(f"/problems/{pid}")
        assert shown.json()["samples"] == [{"name": "data/sample/1", "input": "1 2\n", "output": "3\n",
                                            "truncated": False}]
        assert shown.json()["tests"] == 2 and shown.json()["time_limit"] == 300
        assert HIDDEN_ANSWER not in shown.text and "987654321" not in shown.text
        plain_id = upload(admin, plain).json()["id"]
        assert [s["input"] for s in carol.get(f"/problems/{plain_id}").json()["samples"]] == ["123456789 987654321\n"]

        with Pipeline(app, concurrency=2):
            over = carol.post("/submit", json={"problem_id": pid, "language": 1, "code": program("cpp", "tle"),
                                               "time_limit": 10_000, "memory_limit": 100_000})
            under = carol.post("/submit", json={"problem_id": pid, "language": "cpp", "code": program("cpp", "tle"),
                                                "time_limit": 100})
            assert over.status_code == under.status_code == 201, (over.text, under.text)
            assert (over.json()["time_limit"], over.json()["memory_limit"]) == (300, 64)
            assert (under.json()["time_limit"], under.json()["memory_limit"]) == (100, 64)
            capped, lower = wait_status(carol, over.json()["job_id"]), wait_status(carol, under.json()["job_id"])
    assert capped["verdict"] == "time_limit_exceeded" and capped["time_limit"] == 300
    assert capped["tests"][0]["message"] == "cpu time limit 300 ms", capped["tests"][0]
    assert lower["verdict"] == "time_limit_exceeded" and lower["tests"][0]["message"] == "cpu time limit 100 ms"


def test_gc_deletes_the_source_an_http_submit_stored_and_leaves_a_shared_one(deployment):
    from conveyor.scheduler import Scheduler
    from conveyor_judge.sources import source_key
    app, url = deployment
    with client(url, "root", "acme", admin=True) as admin, client(url, "carol", "acme") as carol:
        pid = upload(admin, aplusb_package(tests=TESTS)).json()["id"]
        shared = source_key("acme", "shared/main.cpp")  # stored by hand, submitted by key: not the job's alone
        app.storage.put(shared, program("cpp", "aplusb").encode())
        with Pipeline(app, concurrency=2):
            posted = carol.post("/submit", json={"problem_id": pid, "language": 1, "code": program("cpp", "aplusb")})
            by_key = app.submit("judge.submission", {"problem_id": pid, "language": "cpp", "source_key": shared},
                                tenant="acme")
            wait_status(carol, posted.json()["job_id"])
            app.wait(by_key, timeout=180)
    stored = app.get(posted.json()["job_id"]).payload["source_key"]
    assert app.storage.exists(stored)
    plan = Scheduler(app).gc(apply=True, retention_days=0)
    assert plan.jobs == 2 and plan.owned_objects == 1
    assert not app.storage.exists(stored) and app.storage.exists(shared)
