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

from sqlalchemy import Connection, Engine, insert, select, update

from conveyor.plugin_api import ConveyorError, connection, list_jobs, live_attempt, utcnow
from conveyor_cad.formats import HEAD_BYTES, mime_of, sniff_bytes
from conveyor_cad.hookspecs import CONVERTERS
from conveyor_cad.records import ConversionStatus, FileRecord
from conveyor_cad.schema import files

if TYPE_CHECKING:
    from conveyor.plugin_api import Conveyor

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


def get_file(bind: Engine | Connection, file_id: str, tenant: str | None = None,
             org: str | None = None) -> FileRecord | None:
    """One file row (of ``tenant`` and ``org`` when given), or None."""
    q = select(files).where(files.c.id == file_id)
    if tenant is not None:
        q = q.where(files.c.tenant_id == tenant)
    if org is not None:
        q = q.where(files.c.org_id == org)
    with connection(bind) as conn:
        row = conn.execute(q).first()
    return _record(row) if row is not None else None


def file_tenant(bind: Engine | Connection, url: str) -> str | None:
    """The tenant of the file row whose stored object is at ``url``, or None."""
    with connection(bind) as conn:
        return conn.execute(select(files.c.tenant_id).where(files.c.system_path == url).limit(1)).scalar()


def file_jobs(bind: Engine | Connection, file_id: str, tenant: str | None = None, org: str | None = None,
              limit: int = 100) -> list[tuple[str, str]]:
    """``(job id, kind)`` of the jobs about a file (of ``tenant`` and ``org`` when given), newest first."""
    return [(j.id, j.kind) for j in list_jobs(bind, file_id=file_id, tenant=tenant, org=org, limit=limit)]


def list_files(engine: Engine, tenant: str | None = None, limit: int = 50, org: str | None = None
               ) -> list[FileRecord]:
    """Newest file rows first (of one tenant, and one org, when given)."""
    q = select(files).order_by(files.c.created_at.desc()).limit(limit)
    if tenant is not None:
        q = q.where(files.c.tenant_id == tenant)
    if org is not None:
        q = q.where(files.c.org_id == org)
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


def detect_format(app: Conveyor, head: bytes, size: int, filename: str,
                  whole: Path | IO[bytes] | None = None) -> str | None:
    """The format of an input: the built-in sniffing, then the ``magic`` and ``extensions`` of
    registered converters (for formats Conveyor itself does not know); None if nothing matches.

    ``whole`` (a path or a seekable binary file) is only read to look inside zip containers.
    """
    fmt = sniff_bytes(head, size, filename, whole)
    if fmt is None:
        for conv in app.plugins.registry(CONVERTERS):
            if any(head.startswith(m) for m in getattr(conv, "magic", ())) or \
                    Path(filename).suffix.lower() in getattr(conv, "extensions", ()):
                return str(conv.formats[0])
    return fmt


def unsupported_error(filename: str, fmt: str | None) -> dict[str, Any]:
    """``conversion_error`` of an input no converter accepts."""
    return {"code": "unsupported_format", "stage": "sniff", "converter": None,
            "message": f"no converter accepts {filename!r} (format {fmt or 'not recognised'}); "
                       "`conveyor cad formats` lists them"}


@dataclass(frozen=True)
class NewFile:
    """A stored input about to get its row: where it is, what it is, and how it will be converted."""

    id: str
    key: str
    filename: str
    size: int
    sha256: str
    fmt: str | None
    choice: Any  # routing.Route | None

    @classmethod
    def plan(cls, app: Conveyor, file_id: str, key: str, filename: str, size: int, sha256: str, fmt: str | None,
             tenant: str) -> NewFile:
        """Choose the conversion route of a stored input for ``tenant``."""
        from conveyor_cad.routing import CadConfig, choose

        choice = choose(app.plugins.registry(CONVERTERS), fmt, tenant, CadConfig.load()) if fmt else None
        return cls(file_id, key, filename, size, sha256, fmt, choice)


def insert_file(app: Conveyor, conn: Connection, new: NewFile, *, tenant: str, org: str | None,
                convert: bool = True, attributes: Mapping[str, Any] | None = None) -> str | None:
    """Add the row of a stored input and, when a converter accepts it, submit ``cad.convert``, both in
    ``conn``'s transaction; returns the job id (None when nothing was submitted)."""
    fmt, choice = new.fmt, new.choice
    content_type = mime_of(fmt) if fmt else (mimetypes.guess_type(new.filename)[0] or "application/octet-stream")
    now = utcnow()
    status = ConversionStatus.PENDING if (choice and convert) else (
        ConversionStatus.UNSUPPORTED if not choice else None)
    row = {"id": new.id, "tenant_id": tenant, "org_id": org, "filename": new.filename,
           "system_path": app.storage.url(new.key), "size": new.size, "sha256": new.sha256,
           "content_type": content_type, "cad_format": fmt, "conversion_status": status.value if status else None,
           "conversion_error": None if choice else unsupported_error(new.filename, fmt),
           "attributes": dict(attributes or {}) or None, "created_at": now, "updated_at": now}
    conn.execute(insert(files).values(**row))
    if choice and convert:
        return app.submit(KIND, {"file_id": new.id}, conn=conn, tenant=tenant, org=org, file_id=new.id)
    return None


def add_file(app: Conveyor, data: bytes | IO[bytes] | str | Path, filename: str | None = None, *,
             tenant: str = "default", org: str | None = None, conn: Connection | None = None,
             convert: bool = True, attributes: Mapping[str, Any] | None = None) -> AddedFile:
    """Store an input and add its ``conveyor_files`` row; submit ``cad.convert`` when a converter accepts it.

    With ``conn`` the row and the job join the caller's open transaction. The bytes are
    written to storage first: if that transaction rolls back, the object is left behind
    for ``conveyor gc`` rather than a row pointing at nothing.
    """
    if filename is None:
        if isinstance(data, (str, Path)):
            filename = Path(data).name
        else:
            raise ValueError("add_file needs a filename when given bytes or a stream")
    file_id = str(uuid.uuid4())
    key = source_key(file_id, filename)
    with _spooled(data) as (path, size, sha, head):
        fmt = detect_format(app, head, size, filename, path)
        with open(path, "rb") as fh:
            app.storage.put(key, fh)
    new = NewFile.plan(app, file_id, key, filename, size, sha, fmt, tenant)

    def write(c: Connection) -> str | None:
        return insert_file(app, c, new, tenant=tenant, org=org, convert=convert, attributes=attributes)

    if conn is not None:
        job_id = write(conn)
        rec = get_file(conn, file_id)
    else:
        with app.engine.begin() as c:
            job_id = write(c)
        rec = get_file(app.engine, file_id)
    assert rec is not None
    return AddedFile(rec, job_id, new.choice.describe_route() if new.choice else None)


def update_for_attempt(engine: Engine, file_id: str, job_id: str, attempt_id: int,
                       values: Mapping[str, Any], statuses: tuple[str, ...] = ("running",)) -> tuple[bool, int, int]:
    """Update a file row only while this job attempt is the live one (running, same attempt_id).

    ``statuses`` widens "live" for the one case that needs it: a cancelled job's own
    attempt records why its file stopped. Returns (updated, attempts, max_attempts). A stale attempt (its lease was lost
    and another worker reclaimed the job) matches nothing, so it can never overwrite
    the paths the winning attempt records.
    """
    with live_attempt(engine, job_id, attempt_id, statuses) as live:
        if live is None:
            return False, 0, 0
        res = live.conn.execute(update(files).where(files.c.id == file_id).values(**values, updated_at=utcnow()))
        return res.rowcount == 1, live.attempts, live.max_attempts


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
