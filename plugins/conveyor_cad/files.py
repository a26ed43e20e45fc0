"""``conveyor_files`` rows: store an input, sniff it, submit its conversion in the same transaction."""

from __future__ import annotations

import hashlib
import mimetypes
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, exists, insert, select, update

from conveyor.db import utcnow
from conveyor.errors import ConveyorError
from conveyor.schema import files, jobs
from conveyor_cad.formats import HEAD_BYTES, mime_of, sniff_bytes
from conveyor_cad.records import ConversionStatus, FileRecord

if TYPE_CHECKING:
    from conveyor.app import Conveyor

KIND = "cad.convert"


class FileNotStored(ConveyorError):
    """No file row with this id (in this tenant)."""


@dataclass(frozen=True)
class AddedFile:
    """What ``add_file`` did: the row, and the conversion job if one was submitted."""

    file: FileRecord
    job_id: str | None
    converter: str | None


def _safe_name(filename: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename.replace("\\", "/")).name).strip("._")
    return base[:200] or "file"


def source_key(file_id: str, filename: str) -> str:
    """Storage key of a stored input."""
    return f"files/{file_id}/{_safe_name(filename)}"


def key_of_url(app: Conveyor, url: str) -> str | None:
    """The storage key behind a URL this deployment's storage wrote, or None for a foreign URL."""
    base = app.storage.url("x")[:-1]
    return url[len(base):] if url.startswith(base) else None


def _record(row: Any) -> FileRecord:
    return FileRecord(**{c: getattr(row, c) for c in FileRecord.__dataclass_fields__})


def get_file(bind: Engine | Connection, file_id: str, tenant: str | None = None) -> FileRecord | None:
    """One file row, or None."""
    q = select(files).where(files.c.id == file_id)
    if tenant is not None:
        q = q.where(files.c.tenant_id == tenant)
    if isinstance(bind, Connection):
        row = bind.execute(q).first()
    else:
        with bind.connect() as conn:
            row = conn.execute(q).first()
    return _record(row) if row is not None else None


def list_files(engine: Engine, tenant: str | None = None, limit: int = 50) -> list[FileRecord]:
    """Newest file rows first."""
    q = select(files).order_by(files.c.created_at.desc()).limit(limit)
    if tenant is not None:
        q = q.where(files.c.tenant_id == tenant)
    with engine.connect() as conn:
        return [_record(r) for r in conn.execute(q)]


@contextmanager
def _spooled(data: bytes | IO[bytes] | str | Path) -> Iterator[tuple[Path, int, str, bytes]]:
    """The input as a local temp file with its size, sha256 and first bytes."""
    with tempfile.TemporaryDirectory(prefix="conveyor-cad-add-") as tmp:
        path = Path(tmp) / "input"
        digest = hashlib.sha256()
        size = 0
        with open(path, "wb") as out:
            if isinstance(data, (str, Path)):
                src: IO[bytes] = open(data, "rb")
            elif isinstance(data, bytes):
                import io
                src = io.BytesIO(data)
            else:
                src = data
            try:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            finally:
                if isinstance(data, (str, Path)):
                    src.close()
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        yield path, size, digest.hexdigest(), head


def add_file(app: Conveyor, data: bytes | IO[bytes] | str | Path, filename: str | None = None, *,
             tenant: str = "default", org: str | None = None, conn: Connection | None = None,
             convert: bool = True, attributes: Mapping[str, Any] | None = None) -> AddedFile:
    """Store an input and add its ``conveyor_files`` row; submit ``cad.convert`` when a converter accepts it.

    With ``conn`` the row and the job join the caller's open transaction. The bytes are
    written to storage first: if that transaction rolls back, the object is left behind
    for ``conveyor gc`` rather than a row pointing at nothing.
    """
    from conveyor_cad.routing import CadConfig, choose

    if filename is None:
        if isinstance(data, (str, Path)):
            filename = Path(data).name
        else:
            raise ValueError("add_file needs a filename when given bytes or a stream")
    file_id = str(uuid.uuid4())
    key = source_key(file_id, filename)
    with _spooled(data) as (path, size, sha, head):
        fmt = sniff_bytes(head, size, filename, path)
        converters = app.plugins.registry("converters")
        if fmt is None:
            for conv in converters:
                if any(head.startswith(m) for m in getattr(conv, "magic", ())) or \
                        Path(filename).suffix.lower() in getattr(conv, "extensions", ()):
                    fmt = conv.formats[0]
                    break
        with open(path, "rb") as fh:
            app.storage.put(key, fh)
    choice = choose(converters, fmt, tenant, CadConfig.load()) if fmt else None
    content_type = mime_of(fmt) if fmt else (mimetypes.guess_type(filename)[0] or "application/octet-stream")
    now = utcnow()
    status = ConversionStatus.PENDING if (choice and convert) else (
        ConversionStatus.UNSUPPORTED if not choice else None)
    error = None if choice else {"code": "unsupported_format", "stage": "sniff", "converter": None,
                                 "message": f"no converter accepts {filename!r} (format "
                                            f"{fmt or 'not recognised'}); `conveyor cad formats` lists them"}
    row = {"id": file_id, "tenant_id": tenant, "org_id": org, "filename": filename,
           "system_path": app.storage.url(key), "size": size, "sha256": sha, "content_type": content_type,
           "cad_format": fmt, "conversion_status": status.value if status else None, "conversion_error": error,
           "attributes": dict(attributes or {}) or None, "created_at": now, "updated_at": now}
    job_id = None

    def write(c: Connection) -> str | None:
        c.execute(insert(files).values(**row))
        if choice and convert:
            return app.submit(KIND, {"file_id": file_id}, conn=c, tenant=tenant, org=org, file_id=file_id)
        return None

    if conn is not None:
        job_id = write(conn)
        rec = get_file(conn, file_id)
    else:
        with app.engine.begin() as c:
            job_id = write(c)
        rec = get_file(app.engine, file_id)
    assert rec is not None
    return AddedFile(rec, job_id, choice.describe_route() if choice else None)


def update_for_attempt(engine: Engine, file_id: str, job_id: str, attempt_id: int,
                       values: Mapping[str, Any], statuses: tuple[str, ...] = ("running",)) -> tuple[bool, int, int]:
    """Update a file row only while this job attempt is the live one (running, same attempt_id).

    ``statuses`` widens "live" for the one case that needs it: a cancelled job's own
    attempt records why its file stopped. Returns (updated, attempts, max_attempts). A stale attempt (its lease was lost
    and another worker reclaimed the job) matches nothing, so it can never overwrite
    the paths the winning attempt records.
    """
    live = exists(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.attempt_id == attempt_id,
                                          jobs.c.status.in_(statuses)))
    with engine.begin() as conn:
        job = conn.execute(select(jobs.c.attempt_id, jobs.c.status, jobs.c.attempts, jobs.c.max_attempts)
                           .where(jobs.c.id == job_id).with_for_update()).first()
        if job is None or job.attempt_id != attempt_id or job.status not in statuses:
            return False, 0, 0
        res = conn.execute(update(files).where(files.c.id == file_id, live)
                           .values(**values, updated_at=utcnow()))
        return res.rowcount == 1, int(job.attempts), int(job.max_attempts)


def fetch_source(app: Conveyor, rec: FileRecord, dest: Path) -> None:
    """Copy a stored input to a local path (raises FileNotFoundError if the object is gone)."""
    key = key_of_url(app, rec.system_path)
    if key is not None:
        if not app.storage.exists(key):
            raise FileNotFoundError(rec.system_path)
        with app.storage.open(key, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return
    import fsspec
    with fsspec.open(rec.system_path, "rb") as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def file_json(app: Conveyor, rec: FileRecord) -> dict[str, Any]:
    """The row as plain JSON plus ``preview_url``/``geometry_url`` (full storage URLs)."""
    d = rec.as_dict()
    d["preview_url"] = app.storage.url(rec.preview_path) if rec.preview_path else None
    d["geometry_url"] = app.storage.url(rec.geometry_path) if rec.geometry_path else None
    return d
