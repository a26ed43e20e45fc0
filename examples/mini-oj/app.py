"""mini-oj: a tiny online judge built on Conveyor.

The host application owns its users, sessions and submissions (three tables in the same
database as Conveyor's jobs). Its sessions are plugged into Conveyor's HTTP API through the
``conveyor_authenticate`` hook, so the same token works on ``/oj/*`` and on ``/api/v1/*``.
A submission row and its ``judge.submission`` job are written in one transaction.

Run: ``python app.py`` (API, dispatcher and worker in one process on http://127.0.0.1:8000).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, MetaData, String, Table, func, insert, select

from conveyor import hookimpl
from conveyor.api import create_app
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor.schema import jobs
from conveyor_judge.engine import find_language
from conveyor_judge.errors import JudgeError
from conveyor_judge.kind import KIND as JUDGE_KIND
from conveyor_judge.problems import ProblemStore
from conveyor_judge.sources import store_source

TENANT = "default"
SESSION_TTL = timedelta(hours=12)
TOKEN_PREFIX = "oj_"

# ---------------------------------------------------------------- the host's own tables

meta = MetaData()
users = Table("oj_users", meta,
              Column("id", Integer, primary_key=True, autoincrement=True),
              Column("name", String(64), nullable=False, unique=True),
              Column("password_hash", String(200), nullable=False),
              Column("is_admin", Boolean, nullable=False, default=False),
              Column("created_at", DateTime(timezone=True), nullable=False))
sessions = Table("oj_sessions", meta,
                 Column("token_sha256", String(64), primary_key=True),
                 Column("user_id", Integer, ForeignKey("oj_users.id"), nullable=False),
                 Column("expires_at", DateTime(timezone=True), nullable=False))
submissions = Table("oj_submissions", meta,
                    Column("id", String(36), primary_key=True),
                    Column("user_id", Integer, ForeignKey("oj_users.id"), nullable=False),
                    Column("problem_id", String(64), nullable=False),
                    Column("language", String(32), nullable=False),
                    Column("job_id", String(36), nullable=False, unique=True),
                    Column("created_at", DateTime(timezone=True), nullable=False))


def now() -> datetime:
    return datetime.now(UTC)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(got.hex(), digest)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- sessions, for both APIs

class SessionAuth:
    """Turns an ``Authorization: Bearer oj_…`` session token into a user (and a Conveyor identity)."""

    def __init__(self) -> None:
        self.conveyor: Conveyor | None = None  # set once the deployment exists

    def user_of(self, request: Request) -> Any | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or self.conveyor is None:
            return None
        with self.conveyor.engine.connect() as conn:
            return conn.execute(
                select(users).join(sessions, sessions.c.user_id == users.c.id)
                .where(sessions.c.token_sha256 == token_digest(token), sessions.c.expires_at > now())).first()

    @hookimpl
    def conveyor_authenticate(self, request: Any) -> dict[str, Any] | None:
        """Conveyor's routes accept our sessions; anything else falls through to the JWT check."""
        user = self.user_of(request)
        if user is None:
            return None
        return {"sub": user.name, "tenant": TENANT, "roles": ["admin"] if user.is_admin else []}


auth = SessionAuth()


def build_conveyor(env: dict[str, str] | None = None) -> Conveyor:
    """A deployment from the environment (SQLite + local storage + sql queue by default) with our auth plugin."""
    settings = load_settings(env=env)
    plugins = load_plugins(settings.plugins, register=lambda pm: pm.register(auth, name="mini-oj-auth"))
    conveyor = Conveyor(settings, plugins=plugins)
    conveyor.init_db()
    meta.create_all(conveyor.engine)
    auth.conveyor = conveyor
    return conveyor


# ---------------------------------------------------------------- the host's routes

class Credentials(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=8, max_length=200)


class SubmitIn(BaseModel):
    problem_id: str = Field(max_length=64)
    language: str = Field(max_length=32)
    code: str = Field(max_length=1_000_000)


def current_user(request: Request) -> Any:
    """The logged-in user of a host route; 401 without a live session."""
    user = auth.user_of(request)
    if user is None:
        raise HTTPException(401, "log in first: POST /oj/login, then send Authorization: Bearer <token>")
    return user


User = Annotated[Any, Depends(current_user)]


def make_router(conveyor: Conveyor) -> APIRouter:
    router = APIRouter(prefix="/oj")

    @router.post("/register", status_code=201)
    def register(body: Annotated[Credentials, Body()]) -> dict[str, Any]:
        """Create a user; the first one to register is the admin (it may add problems)."""
        with conveyor.engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.name == body.name)).first():
                raise HTTPException(409, f"the name {body.name!r} is taken")
            first = not conn.execute(select(func.count()).select_from(users)).scalar()
            conn.execute(insert(users).values(name=body.name, password_hash=hash_password(body.password),
                                              is_admin=first, created_at=now()))
        return {"name": body.name, "admin": first}

    @router.post("/login")
    def login(body: Annotated[Credentials, Body()]) -> dict[str, Any]:
        """A session token for ``Authorization: Bearer`` on /oj/* and /api/v1/*."""
        with conveyor.engine.begin() as conn:
            user = conn.execute(select(users).where(users.c.name == body.name)).first()
            if user is None or not check_password(body.password, user.password_hash):
                raise HTTPException(401, "wrong name or password")
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            conn.execute(insert(sessions).values(token_sha256=token_digest(token), user_id=user.id,
                                                 expires_at=now() + SESSION_TTL))
        return {"token": token, "expires_in": int(SESSION_TTL.total_seconds())}

    @router.post("/submit", status_code=201)
    def submit(user: User, body: Annotated[SubmitIn, Body()]) -> dict[str, Any]:
        """Record the submission and queue its judge.submission job in one transaction."""
        try:
            lang = find_language(conveyor.plugins.registry("judges"), body.language)
            ProblemStore(conveyor.storage).load(body.problem_id)
        except JudgeError as exc:
            raise HTTPException(404 if exc.code == "problem_not_found" else 422, exc.code) from None
        key = store_source(conveyor.storage, TENANT, f"{uuid.uuid4().hex}/{lang.source_name}", body.code.encode())
        sid = str(uuid.uuid4())
        try:
            with conveyor.engine.begin() as conn:  # both rows, or neither
                job_id = conveyor.submit(JUDGE_KIND, {"problem_id": body.problem_id, "language": lang.id,
                                                      "source_key": key}, conn=conn, tenant=TENANT)
                conn.execute(insert(submissions).values(id=sid, user_id=user.id, problem_id=body.problem_id,
                                                        language=lang.id, job_id=job_id, created_at=now()))
        except BaseException:
            conveyor.storage.delete(key)  # rolled back (a quota, the queue's pressure): no orphan source
            raise
        return {"id": sid, "job_id": job_id, "status_url": f"/oj/submissions/{sid}"}

    @router.get("/submissions/{sid}")
    def submission(user: User, sid: str) -> dict[str, Any]:
        """The submitter's own submission: the job's status, then the verdict."""
        with conveyor.engine.connect() as conn:
            row = conn.execute(select(submissions).where(submissions.c.id == sid,
                                                         submissions.c.user_id == user.id)).first()
        if row is None:
            raise HTTPException(404, "no such submission")
        job = conveyor.get(row.job_id)
        result = job.result if isinstance(job.result, dict) else {}
        return {"id": sid, "problem_id": row.problem_id, "language": row.language, "job_id": row.job_id,
                "status": job.status.value, "verdict": result.get("verdict"), "score": result.get("score"),
                "time_ms": result.get("time_ms"), "message": result.get("message")}

    @router.get("/leaderboard")
    def leaderboard() -> list[dict[str, Any]]:
        """Users by the number of problems they solved (an accepted submission), then by name."""
        q = (select(users.c.name, submissions.c.problem_id, jobs.c.result)
             .join(submissions, submissions.c.user_id == users.c.id)
             .join(jobs, jobs.c.id == submissions.c.job_id)
             .where(jobs.c.status == "succeeded"))
        solved: dict[str, set[str]] = {}
        with conveyor.engine.connect() as conn:
            for name, problem_id, result in conn.execute(q):
                if isinstance(result, dict) and result.get("verdict") == "accepted":
                    solved.setdefault(name, set()).add(problem_id)
        ranked = sorted(solved.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        return [{"rank": i, "name": name, "solved": len(ps), "problems": sorted(ps)}
                for i, (name, ps) in enumerate(ranked, 1)]

    return router


def build_app(conveyor: Conveyor | None = None) -> FastAPI:
    """The host's routes under /oj, Conveyor's API (/api/v1, /docs) mounted beside them."""
    conveyor = conveyor or build_conveyor()
    host = FastAPI(title="mini-oj", docs_url="/oj/docs", openapi_url="/oj/openapi.json")
    host.include_router(make_router(conveyor))
    host.mount("/", create_app(conveyor))  # last: anything not /oj/* is Conveyor's
    host.state.conveyor = conveyor
    return host


def main() -> None:
    import uvicorn

    from conveyor.runner import Runner
    conveyor = build_conveyor()
    runner = Runner(conveyor, concurrency=int(os.environ.get("MINI_OJ_CONCURRENCY", "2")))
    threading.Thread(target=runner.run, kwargs={"install_signals": False}, daemon=True).start()
    try:
        uvicorn.run(build_app(conveyor), host=os.environ.get("HOST", "127.0.0.1"),
                    port=int(os.environ.get("PORT", "8000")))
    finally:
        runner.stop()
        time.sleep(0.2)


if __name__ == "__main__":
    main()
