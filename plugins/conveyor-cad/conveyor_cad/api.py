"""The CAD plugin's HTTP routes, mounted under ``/api/v1`` by its ``conveyor_api_routes`` hook.

- ``POST /files``: a ``multipart/form-data`` upload whose ``file`` part is streamed to
  storage chunk by chunk (sha256 and size computed on the way, never held whole in
  memory), sniffed, then given its ``conveyor_files`` row and its ``cad.convert`` job in
  one database transaction, in the caller's tenant and org.
- ``GET /file/{file_id}``: the row as the caller may see it (storage paths for admins only).
- ``GET /file/{file_id}/preview`` and ``/geometry``: the derivative's bytes, streamed from
  storage, with an ``ETag`` (a digest of the artifact's per-attempt storage key) and
  ``If-None-Match`` → 304.

A file of another tenant or org, and an id that cannot be one, is ``404 not_found``, the
answer for a missing id. FastAPI is imported here at the top: the hook imports this module
only when the API builds its routes, so workers without the ``api`` extra never need it.
"""

import hashlib
import logging
import posixpath
import uuid
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from conveyor.plugin_api import CATALOG, Conveyor, Scope, iso
from conveyor.plugin_api.http import (
    SYSTEM_CODES,
    UNAVAILABLE_RETRY_AFTER_S,
    ApiError,
    AppDep,
    ErrorOut,
    IdentityDep,
    ScopeDep,
    error_response,
    not_found,
    retry_after,
    write_tenant,
)
from conveyor_cad.files import (
    KIND,
    NewFile,
    detect_format,
    file_jobs,
    get_file,
    insert_file,
    list_files,
    source_key,
    unsupported_error,
)
from conveyor_cad.formats import FORMATS, HEAD_BYTES
from conveyor_cad.records import FileRecord

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ModuleNotFoundError:  # python-multipart before 0.0.13
    from multipart.exceptions import FormParserError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

log = logging.getLogger("conveyor.cad.api")

#: bytes gathered before one write to storage (each write is a trip to a worker thread)
WRITE_CHUNK = 1 << 20
#: bytes read from storage per chunk of a download
READ_CHUNK = 256 * 1024
#: parts a multipart body may have, and header bytes per part
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 16 * 1024
#: characters of an uploaded file's name
FILENAME_MAX = 255
#: job ids listed by ``GET /file/{id}``
MAX_JOB_IDS = 100

ConversionStatusName = Literal["pending", "processing", "done", "partial", "failed", "unsupported"]


class FileOut(BaseModel):
    """A stored CAD file. `system_path`, `preview_path` and `geometry_path` are shown to admins only."""

    id: str
    tenant_id: str
    org_id: str | None = None
    filename: str
    size: int
    sha256: str | None = None
    content_type: str | None = None
    cad_format: str | None = Field(None, description="The sniffed format (`step`, `stl`, `dxf`, …).")
    conversion_status: ConversionStatusName | None = None
    conversion_error: dict[str, Any] | None = Field(
        None, description="`{code, message, converter, stage}` of a failed conversion (admins also see the "
                          "converter's `output` and its `isolation`).")
    attributes: dict[str, Any] | None = None
    preview_url: str | None = Field(None, description="Where to download the PNG preview; null until there is one.")
    geometry_url: str | None = Field(None, description="Where to download the GLB; null until there is one.")
    job_id: str | None = Field(None, description="The newest `cad.convert` job of the file.")
    job_ids: list[str] = Field(default_factory=list, description="Every job about the file, newest first.")
    created_at: str
    updated_at: str
    system_path: str | None = Field(None, description="Admins only: the storage URL of the input.")
    preview_path: str | None = Field(None, description="Admins only: the storage key of the preview.")
    geometry_path: str | None = Field(None, description="Admins only: the storage key of the geometry.")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut} for s in (401, 403, 422, 503, *statuses)}


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "The CAD file; its part must carry a filename."}}}}}}}

ETAG_HEADER = {"ETag": {"description": "A strong tag of the artifact (a digest of its per-attempt storage key).",
                        "schema": {"type": "string"}}}


def add_routes(router: APIRouter, app: Conveyor) -> None:
    """Add the CAD routes to the plugin's router (each request uses its scope's deployment)."""
    router.add_api_route(
        "/files", upload_file, methods=["POST"], status_code=201, response_model=None, name="cad_upload_file",
        summary="Upload a CAD file and convert it", tags=["cad"], openapi_extra=UPLOAD_BODY,
        responses={201: {"model": FileOut, "description": "Stored; its conversion is submitted"},
                   **_errors(413, 415, 429)})
    router.add_api_route(
        "/files", list_visible_files, methods=["GET"], response_model=None, name="cad_list_files",
        summary="List the caller's CAD files, newest first", tags=["cad"],
        responses={200: {"model": list[FileOut]}, **_errors()})
    router.add_api_route(
        "/file/{file_id}", read_file, methods=["GET"], response_model=None, name="cad_get_file",
        summary="Read a CAD file's row", tags=["cad"], responses={200: {"model": FileOut}, **_errors(404)})
    for role, mime in (("preview", "image/png"), ("geometry", "model/gltf-binary")):
        router.add_api_route(
            f"/file/{{file_id}}/{role}", _artifact_route(role), methods=["GET"], response_model=None,
            response_class=Response, name=f"cad_file_{role}", summary=f"Download a CAD file's {role}",
            tags=["cad"],
            responses={200: {"description": f"The {role}", "headers": ETAG_HEADER,
                             "content": {mime: {"schema": {"type": "string", "format": "binary"}}}},
                       304: {"description": "Not modified: the If-None-Match tag is current", "headers": ETAG_HEADER},
                       **_errors(404)})


# ---------------------------------------------------------------- what a caller sees

def _scrub(text: Any, rec: FileRecord, app: Conveyor) -> Any:
    """A message without the storage locations only admins see."""
    if not isinstance(text, str):
        return text
    for secret, stand_in in ((rec.system_path, rec.filename), (app.storage.base_url, "<storage>"),
                             (app.storage.root if len(app.storage.root) >= 8 else "", "<storage>")):
        if secret:
            text = text.replace(secret, stand_in)
    return text


def public_error(error: dict[str, Any], rec: FileRecord, app: Conveyor) -> dict[str, Any]:
    """``conversion_error`` for callers without the admin role: code, message, converter and stage, with
    no storage location, and the catalog's meaning for the system's own failures (as job views do)."""
    out: dict[str, Any] = {k: _scrub(error.get(k), rec, app) for k in ("code", "message", "converter", "stage")
                           if k in error}
    if out.get("code") in SYSTEM_CODES:
        entry = CATALOG.get(out["code"])
        out["message"] = entry.meaning if entry else out["code"]
    return out


def file_view(request: Request, app: Conveyor, rec: FileRecord, jobs: list[tuple[str, str]],
              admin: bool) -> dict[str, Any]:
    """The file as JSON for this caller."""
    error = rec.conversion_error
    if isinstance(error, dict) and not admin:
        error = public_error(error, rec, app)
    out: dict[str, Any] = {
        "id": rec.id, "tenant_id": rec.tenant_id, "org_id": rec.org_id, "filename": rec.filename,
        "size": rec.size, "sha256": rec.sha256, "content_type": rec.content_type, "cad_format": rec.cad_format,
        "conversion_status": rec.conversion_status, "conversion_error": error, "attributes": rec.attributes,
        "preview_url": str(request.url_for("cad_file_preview", file_id=rec.id).path) if rec.preview_path else None,
        "geometry_url": str(request.url_for("cad_file_geometry", file_id=rec.id).path) if rec.geometry_path
        else None,
        "job_id": next((job_id for job_id, kind in jobs if kind == KIND), None),
        "job_ids": [job_id for job_id, _ in jobs],
        "created_at": iso(rec.created_at), "updated_at": iso(rec.updated_at)}
    if admin:
        out.update(system_path=rec.system_path, preview_path=rec.preview_path, geometry_path=rec.geometry_path)
    return out


def _plausible_id(file_id: str) -> bool:
    return 0 < len(file_id) <= 36 and file_id.isascii() and file_id.isprintable()


def visible_file(app: Conveyor, scope: Scope, file_id: str) -> FileRecord:
    """The file if this scope may see it; 404 ``not_found`` otherwise (also for another tenant's or org's)."""
    if not _plausible_id(file_id):
        raise not_found("file")
    rec = get_file(app.engine, file_id, scope.tenant, scope.org)
    if rec is None:
        raise not_found("file")
    return rec


# ---------------------------------------------------------------- GET /file/{id}

def read_file(request: Request, file_id: str, identity: IdentityDep, scope: ScopeDep,
              app: AppDep) -> dict[str, Any]:
    """The file: name, size, sha256, format, conversion status and error, where to download its preview
    and geometry, and its jobs. `system_path`, `preview_path` and `geometry_path` are for admins."""
    rec = visible_file(app, scope, file_id)
    jobs = file_jobs(app.engine, rec.id, scope.tenant, scope.org, MAX_JOB_IDS)
    return file_view(request, app, rec, jobs, identity.admin)


def list_visible_files(request: Request, identity: IdentityDep, scope: ScopeDep, app: AppDep,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict[str, Any]]:
    """The files of the caller's tenant (and org), newest first, as `GET /file/{id}` shows each but without their
    jobs (`job_id` null, `job_ids` empty: one read for the whole list; `GET /file/{id}` has them)."""
    return [file_view(request, app, rec, [], identity.admin)
            for rec in list_files(app.engine, scope.tenant, limit, scope.org)]


# ---------------------------------------------------------------- GET /file/{id}/preview|geometry

def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _not_converted(rec: FileRecord, role: str) -> ApiError:
    status = rec.conversion_status
    if status in ("pending", "processing", None):
        why = f"the file is not converted yet (conversion_status {status or 'unset'}); poll GET /api/v1/file/{rec.id}"
    elif role == "geometry" and status in ("done", "partial"):
        why = "the conversion made no geometry (a 2D drawing has none, or that stage failed: see conversion_error)"
    else:
        why = f"the conversion made no {role} (conversion_status {status}; see conversion_error)"
    return ApiError(404, "not_converted", f"no {role}: {why}", {"conversion_status": status})


def artifact_etag(key: str) -> str:
    """The strong ETag of a derivative: a digest of its storage key.

    Keys are per attempt (``jobs/{job_id}/{attempt_id}/preview.png``), an attempt writes each
    derivative once and attempt ids only grow, so the key names the content: a reconversion
    gives a new key and a new tag. (The job's manifest has the content's sha256 too, but only
    once the job is finalized, after the file row already names the derivative.)
    """
    return f'"{hashlib.sha256(key.encode()).hexdigest()}"'


def _download_name(rec: FileRecord, key: str) -> str:
    stem = PurePosixPath(source_key(rec.id, rec.filename)).stem or "file"
    return f"{stem}{PurePosixPath(key).suffix}"


def send_artifact(app: Conveyor, scope: Scope, file_id: str, role: str, if_none_match: str | None) -> Response:
    """The preview or geometry of a visible file, streamed; 304 when ``If-None-Match`` names its tag."""
    rec = visible_file(app, scope, file_id)
    key = rec.preview_path if role == "preview" else rec.geometry_path
    if not key:
        raise _not_converted(rec, role)
    etag = artifact_etag(key)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
    if if_none_match and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    gone = ApiError(404, "not_found", f"the {role} of this file is no longer in storage; convert it again "
                                      "(POST /api/v1/jobs/{job_id}/retry)")
    try:
        path = app.storage.path(key)
        size = int(app.storage.fs.size(path))
        fh = app.storage.open(key, "rb")
    except (FileNotFoundError, ValueError):
        raise gone from None
    suffix = PurePosixPath(key).suffix.lstrip(".").lower()
    mime = "image/png" if role == "preview" else (FORMATS[suffix].mime if suffix in FORMATS
                                                  else "application/octet-stream")
    headers.update({"Content-Length": str(size),
                    "Content-Disposition": f'inline; filename="{_download_name(rec, key)}"'})

    def chunks() -> Any:
        try:
            while chunk := fh.read(READ_CHUNK):
                yield chunk
        finally:
            fh.close()

    return StreamingResponse(chunks(), media_type=mime, headers=headers)


def _artifact_route(role: str) -> Any:
    def download(file_id: str, scope: ScopeDep, app: AppDep,
                 if_none_match: Annotated[str | None, Header(max_length=4096, description="An ETag this "
                                                             "answer gave: 304 while it is current.")] = None
                 ) -> Response:
        return send_artifact(app, scope, file_id, role, if_none_match)

    download.__name__ = f"download_{role}"
    download.__doc__ = (f"The file's {role} ({'PNG' if role == 'preview' else 'glTF binary'}), streamed from "
                        "storage with an `ETag`; `404 not_converted` until the conversion made it.")
    return download


# ---------------------------------------------------------------- POST /files

def _invalid(message: str, detail: Any = None) -> ApiError:
    return ApiError(422, "invalid_request", message, detail)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Upload:
    """One multipart body as it arrives: the ``file`` part goes to storage, other parts are ignored.

    The parser's callbacks run in the event loop and only count, hash and queue bytes;
    ``flush`` writes what is queued to storage in a worker thread.
    """

    def __init__(self, app: Conveyor, file_id: str, limit: int) -> None:
        self.app, self.file_id, self.limit = app, file_id, limit
        self.key: str | None = None
        self.filename: str | None = None
        self.out: Any = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.head = bytearray()
        self.size = 0
        self.digest = hashlib.sha256()
        self.in_file = self.file_done = self.ended = False
        self.parts = 0
        self._header_bytes = 0
        self._name = self._value = b""
        self._disposition: bytes | None = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _invalid(f"the body has more than {MAX_PARTS} parts; send one part named `file`")
        self._header_bytes = 0
        self._disposition = None

    def _header_text(self, data: bytes, start: int, end: int) -> bytes:
        self._header_bytes += end - start
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise _invalid(f"a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")
        return data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += self._header_text(data, start, end)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += self._header_text(data, start, end)

    def on_header_end(self) -> None:
        if self._name.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        kind, options = parse_options_header(self._disposition)
        if kind != b"form-data" or b"name" not in options:
            raise _invalid("every part needs a 'Content-Disposition: form-data; name=…' header")
        if options[b"name"] != b"file":
            return  # another field: its bytes are read past and dropped
        if self.key is not None:
            raise _invalid("the body has more than one part named `file`; upload one file per request",
                           {"field": "file"})
        raw = options.get(b"filename")
        if raw is None:
            raise _invalid("the `file` part has no filename (Content-Disposition: form-data; name=\"file\"; "
                           "filename=\"part.step\")", {"field": "file"})
        name = PurePosixPath(_text(raw).replace("\\", "/")).name.strip()
        if not name or len(name) > FILENAME_MAX or not name.isprintable():
            raise _invalid(f"the filename must be 1 to {FILENAME_MAX} printable characters", {"field": "file"})
        self.filename = name
        self.key = source_key(self.file_id, name)
        self.in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.limit:
            raise ApiError(413, "request_too_large", f"the file is larger than {self.limit} bytes "
                                                     "(CONVEYOR_MAX_UPLOAD_BYTES); send a smaller one",
                           {"limit": self.limit})
        self.digest.update(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        self.pending.append(chunk)
        self.pending_size += len(chunk)

    def on_part_end(self) -> None:
        if self.in_file:
            self.in_file = False
            self.file_done = True

    def on_end(self) -> None:
        self.ended = True

    # -- storage (blocking: called in a worker thread)

    def _write(self, data: bytes) -> None:
        if self.out is None:
            assert self.key is not None
            storage = self.app.storage
            path = storage.path(self.key)
            parent = posixpath.dirname(path)
            if parent and storage.protocol not in ("s3", "s3a"):  # object stores have no directories
                storage.fs.makedirs(parent, exist_ok=True)
            self.out = storage.fs.open(path, "wb")
        if data:
            self.out.write(data)

    def _close(self) -> None:
        self._write(b"")
        self.out.close()
        self.out = None

    def discard(self) -> None:
        """Remove whatever was written (the partial object and its folder)."""
        try:
            if self.out is not None:
                self.out.close()
        except Exception:  # the object is deleted next; a failed close changes nothing
            pass
        self.out = None
        if self.key is not None:
            try:
                self.app.storage.delete(f"files/{self.file_id}", recursive=True)
            except Exception:
                log.warning("upload %s: could not remove %s; `conveyor gc` will", self.file_id, self.key,
                            exc_info=True)

    async def flush(self, final: bool = False) -> None:
        try:
            if self.pending_size >= WRITE_CHUNK or (final and self.pending):
                data = b"".join(self.pending)
                self.pending.clear()
                self.pending_size = 0
                await run_in_threadpool(self._write, data)
            if final:
                await run_in_threadpool(self._close)
        except OSError as exc:
            log.warning("upload %s: storage write failed: %s: %s", self.file_id, type(exc).__name__, exc)
            raise ApiError(503, "unavailable", "the file could not be written to storage; retry later", None,
                           retry_after(UNAVAILABLE_RETRY_AFTER_S)) from None


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not 0 < len(boundary) <= 200:
        raise _invalid("send the file as multipart/form-data with a part named `file` "
                       "(curl -F file=@part.step)", {"header": "content-type"})
    return boundary


def _sniff(up: _Upload) -> str | None:
    assert up.key is not None and up.filename is not None
    head = bytes(up.head)
    if head.startswith(b"PK\x03\x04"):  # a zip: 3MF is told by the names inside, read from storage
        with up.app.storage.open(up.key, "rb") as whole:
            return detect_format(up.app, head, up.size, up.filename, whole)
    return detect_format(up.app, head, up.size, up.filename)


def _commit(app: Conveyor, new: NewFile, tenant: str, org: str | None) -> str | None:
    with app.engine.begin() as conn:
        return insert_file(app, conn, new, tenant=tenant, org=org)


async def _receive(request: Request, up: _Upload) -> None:
    parser = MultipartParser(_boundary(request), up.callbacks())  # type: ignore[arg-type]  # a TypedDict of callbacks
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await up.flush()
        parser.finalize()
    except FormParserError as exc:
        raise _invalid(f"the multipart body is malformed: {exc}") from None
    if not up.ended:
        raise _invalid("the multipart body ended before its closing boundary (a truncated upload)")
    if not up.file_done:
        raise _invalid("the body has no part named `file`; send the file as multipart/form-data "
                       "(curl -F file=@part.step)", {"field": "file"})
    await up.flush(final=True)


async def upload_file(request: Request, identity: IdentityDep, scope: ScopeDep, app: AppDep) -> Response:
    """Upload one CAD file as `multipart/form-data` (part `file`, with a filename); 201 with the file.

    The bytes stream to storage as they arrive, then the row and its `cad.convert` job are
    written in one transaction, in the caller's tenant and org. Refused, writing nothing:
    `413 request_too_large` past CONVEYOR_MAX_UPLOAD_BYTES, `415 unsupported_format` when no
    converter takes the format, `422 invalid_request` for a malformed body.
    """
    tenant = write_tenant(scope)
    file_id = str(uuid.uuid4())
    up = _Upload(app, file_id, app.settings.max_upload_bytes)
    try:
        try:
            await _receive(request, up)
        except ClientDisconnect:  # the client left, or the body limit cut it off (its 413 is already sent)
            await _discard(up)
            return error_response(422, "invalid_request", "the upload ended before it was complete")
        assert up.key is not None and up.filename is not None
        fmt = await run_in_threadpool(_sniff, up)
        new = await run_in_threadpool(NewFile.plan, app, file_id, up.key, up.filename, up.size,
                                      up.digest.hexdigest(), fmt, tenant)
        if new.choice is None:
            error = unsupported_error(up.filename, fmt)
            raise ApiError(415, "unsupported_format", error["message"], {"cad_format": fmt})
        job_id = await run_in_threadpool(_commit, app, new, tenant, scope.org)
    except BaseException:
        await _discard(up)
        raise
    log.info("upload %s stored: %s, %d bytes, format %s, job %s, tenant %s", file_id, up.key, up.size, fmt,
             job_id, tenant)
    rec = await run_in_threadpool(get_file, app.engine, file_id)
    assert rec is not None
    jobs = [(job_id, KIND)] if job_id else []
    body = file_view(request, app, rec, jobs, identity.admin)
    return JSONResponse(body, status_code=201,
                        headers={"Location": str(request.url_for("cad_get_file", file_id=file_id).path)})


async def _discard(up: _Upload) -> None:
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(up.discard)
