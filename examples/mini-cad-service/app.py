"""mini-cad-service: a CAD upload service built on Conveyor.

The host application owns a ``projects`` table (in the same database as Conveyor's jobs and
files). ``POST /cad/projects`` stores the upload, then writes the project row, the
``conveyor_files`` row and the ``cad.convert`` job in one transaction. Callers use a JWT
minted with ``conveyor token`` (``CONVEYOR_JWT_SECRET``), verified the way Conveyor's own
routes verify it; Conveyor's API (``/api/v1/file/{id}``, ``/preview``, ``/geometry``,
``/jobs?file_id=``) is mounted beside the host's routes.

Run: ``python app.py`` (API, dispatcher and worker in one process on http://127.0.0.1:8000).
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, select

from conveyor.api import create_app
from conveyor.api.auth import Identity, Verifier
from conveyor.api.errors import ApiError
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.errors import ConveyorError
from conveyor_cad.files import add_file, file_jobs, get_file

API = "/api/v1"

meta = MetaData()
projects = Table("cad_projects", meta,
                 Column("id", String(36), primary_key=True),
                 Column("tenant", String(200), nullable=False, index=True),
                 Column("owner", String(200), nullable=False),
                 Column("name", String(200), nullable=False),
                 Column("file_id", String(36), nullable=False, unique=True),
                 Column("created_at", DateTime(timezone=True), nullable=False))


def build_conveyor(env: dict[str, str] | None = None) -> Conveyor:
    """A deployment from the environment (SQLite + local storage + sql queue by default)."""
    conveyor = Conveyor(load_settings(env=env))
    conveyor.init_db()
    meta.create_all(conveyor.engine)
    return conveyor


def caller(request: Request) -> Identity:
    """The caller of a host route, from a JWT checked as Conveyor's routes check it; 401 otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "send Authorization: Bearer <JWT> (`conveyor token --sub NAME`)")
    try:
        return request.app.state.verifier.identity(token.strip())  # type: ignore[no-any-return]
    except ApiError as exc:
        raise HTTPException(401, exc.message) from None


Caller = Annotated[Identity, Depends(caller)]


def make_router(conveyor: Conveyor) -> APIRouter:
    router = APIRouter(prefix="/cad")

    def view(row: Any) -> dict[str, Any]:
        rec = get_file(conveyor.engine, row.file_id, tenant=row.tenant)
        links = {"file": f"{API}/file/{row.file_id}", "jobs": f"{API}/jobs?file_id={row.file_id}"}
        if rec is not None and rec.preview_path:
            links["preview"] = f"{API}/file/{row.file_id}/preview"
        if rec is not None and rec.geometry_path:
            links["geometry"] = f"{API}/file/{row.file_id}/geometry"
        return {"id": row.id, "name": row.name, "owner": row.owner, "file_id": row.file_id,
                "filename": rec.filename if rec else None, "cad_format": rec.cad_format if rec else None,
                "conversion_status": rec.conversion_status if rec else None,
                "created_at": row.created_at.isoformat(), "links": links}

    def own(caller: Identity, project_id: str) -> Any:
        with conveyor.engine.connect() as conn:
            row = conn.execute(select(projects).where(projects.c.id == project_id,
                                                      projects.c.tenant == caller.tenant)).first()
        if row is None:
            raise HTTPException(404, "no such project")
        return row

    @router.post("/projects", status_code=201)
    def create_project(caller: Caller, name: Annotated[str, Form(min_length=1, max_length=200)],
                       file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """Upload a CAD file as a new project: project row, file row and conversion job in one transaction."""
        pid = str(uuid.uuid4())
        try:
            with conveyor.engine.begin() as conn:
                added = add_file(conveyor, file.file, file.filename or "upload", tenant=caller.tenant, conn=conn)
                conn.execute(insert(projects).values(id=pid, tenant=caller.tenant, owner=caller.subject, name=name,
                                                     file_id=added.file.id, created_at=datetime.now(UTC)))
        except ConveyorError as exc:  # unsupported format, quota: nothing was written
            raise HTTPException(422, str(exc)) from None
        return {**view(own(caller, pid)), "job_id": added.job_id}

    @router.get("/projects")
    def list_projects(caller: Caller) -> list[dict[str, Any]]:
        """The caller's tenant's projects, newest first."""
        with conveyor.engine.connect() as conn:
            rows = conn.execute(select(projects).where(projects.c.tenant == caller.tenant)
                                .order_by(projects.c.created_at.desc()).limit(100)).all()
        return [view(r) for r in rows]

    @router.get("/projects/{project_id}")
    def project(caller: Caller, project_id: str) -> dict[str, Any]:
        """A project: its file's conversion status, and links to Conveyor's preview, geometry and jobs."""
        row = own(caller, project_id)
        out = view(row)
        out["jobs"] = [{"id": j, "kind": k} for j, k in file_jobs(conveyor.engine, row.file_id, tenant=row.tenant)]
        return out

    return router


def build_app(conveyor: Conveyor | None = None) -> FastAPI:
    """The host's routes under /cad, Conveyor's API (/api/v1, /docs) mounted beside them."""
    conveyor = conveyor or build_conveyor()
    host = FastAPI(title="mini-cad-service", docs_url="/cad/docs", openapi_url="/cad/openapi.json")
    host.include_router(make_router(conveyor))
    host.mount("/", create_app(conveyor))  # last: anything not /cad/* is Conveyor's
    host.state.conveyor = conveyor
    host.state.verifier = Verifier(conveyor.settings)
    return host


def main() -> None:
    import uvicorn

    from conveyor.runner import Runner
    conveyor = build_conveyor()
    runner = Runner(conveyor, concurrency=int(os.environ.get("MINI_CAD_CONCURRENCY", "2")))
    threading.Thread(target=runner.run, kwargs={"install_signals": False}, daemon=True).start()
    try:
        uvicorn.run(build_app(conveyor), host=os.environ.get("HOST", "127.0.0.1"),
                    port=int(os.environ.get("PORT", "8000")))
    finally:
        runner.stop()


if __name__ == "__main__":
    main()
