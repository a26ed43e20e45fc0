"""The judge's HTTP routes under ``/api/v1``: problems, online-judge submissions and their status.

This module imports FastAPI at its top; the plugin imports it only inside its
``conveyor_api_routes`` hook, so workers without the ``api`` extra still load the judge.

- ``POST /problems`` (admins): a problem package as ``multipart/form-data``, refused with its
  catalog code when it breaks a bound (422; 413 when the zip itself is too big).
- ``GET /problems``, ``GET /problems/{problem_id}``: the catalog every caller may read;
  the sample tests a package marks public, never the others.
- ``POST /submit``: ``{"problem_id", "language", "code", "time_limit", "memory_limit"}``; the
  source is stored under the caller's tenant and a ``judge.submission`` job submitted there.
- ``GET /status/{job_id}``: the job's status and, once judged, exactly the result the feedback
  policy gave the submitter; another tenant's job is 404 like a missing one.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from conveyor.plugin_api import Conveyor, Job, JobStatus
from conveyor.plugin_api.http import (
    AdminDep,
    ApiError,
    AppDep,
    ErrorInfo,
    ErrorOut,
    IdentityDep,
    ScopeDep,
    api_state,
    not_found,
    visible_job,
    write_tenant,
)
from conveyor_judge import bounds, unpack
from conveyor_judge.engine import SOURCE_MAX_BYTES, find_language
from conveyor_judge.errors import JudgeError
from conveyor_judge.feedback import NAMES as FEEDBACK_NAMES
from conveyor_judge.feedback import Feedback, resolve
from conveyor_judge.hookspecs import CHECKERS, LANGUAGES
from conveyor_judge.kind import KIND, LIMIT_MAX, admin_key, capped_limits
from conveyor_judge.problems import Problem, ProblemInfo, ProblemStore, check_title
from conveyor_judge.sources import store_source
from conveyor_judge.verdicts import Verdict

log = logging.getLogger("conveyor.judge.api")

router = APIRouter(tags=["judge"])

#: what each judge code answers over HTTP (anything else the judge raises here is 422)
STATUS_OF = {"problem_not_found": 404, "source_too_large": 413}
#: failure codes whose message is the submitter's own business; the others show the catalog's meaning
SUBMITTER_MESSAGES = frozenset({"invalid_payload", "unknown_language", "problem_not_found", "source_not_found",
                                "cancelled"})
#: sample tests shown per problem, and bytes shown of each input and output
MAX_SAMPLES = 20
SAMPLE_MAX_BYTES = 64 * 1024
#: room for the form's other fields and the multipart framing around the package
FORM_OVERHEAD_BYTES = 1 << 20
#: read the uploaded package in pieces of this size
CHUNK_BYTES = 1 << 20
MAX_PAGE = 500
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
RESULT_KEYS = ("verdict", "score", "max_score", "time_ms", "memory_kib", "tests_total", "tests_run", "message",
               "feedback", "sandbox", "compile", "tests")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut} for s in (401, 403, 422, 503, *statuses)}


def judge_error(exc: JudgeError, status: int | None = None) -> ApiError:
    """The answer for a judge refusal: its catalog code, 404/413 where that is what it means, else 422."""
    return ApiError(status or STATUS_OF.get(exc.code, 422), exc.code, exc.message)


def no_problem(problem_id: str) -> ApiError:
    """404 ``problem_not_found`` naming the id only (the judge's own message names the storage)."""
    return ApiError(404, "problem_not_found", f"no problem {problem_id[:80]!r}; GET /api/v1/problems lists them")


def invalid(field: str, message: str) -> ApiError:
    """422 ``invalid_request`` naming a field of the body."""
    return ApiError(422, "invalid_request", f"{field}: {message}",
                    [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def deployment(request: Request) -> Conveyor:
    """The deployment the API serves: problems are one catalog in its storage, whatever the caller's tenant."""
    return api_state(request).app


DeploymentDep = Annotated[Conveyor, Depends(deployment)]


def problem_store(app: Conveyor) -> ProblemStore:
    """The problem catalog of a deployment (its storage, its registered checkers)."""
    return ProblemStore(app.storage, checkers=[c.id for c in app.plugins.registry(CHECKERS)])


# ---------------------------------------------------------------- schemas

class SampleOut(BaseModel):
    """A public test of a problem."""

    name: str
    input: str = Field(description="The test's input (UTF-8, invalid bytes replaced), at most 64 KiB.")
    output: str | None = Field(description="Its expected output, at most 64 KiB; null for an interactive test "
                                           "without one.")
    truncated: bool = Field(description="Whether the input or the output was longer than shown.")


class ProblemOut(BaseModel):
    """A problem as every caller may see it: no hidden test data."""

    id: str
    title: str
    time_limit: int = Field(description="Cpu time per test, ms (before a language's time factor).")
    memory_limit: int = Field(description="Memory per test, MiB (before a language's runtime allowance).")
    output_limit_kib: int
    tests: int = Field(description="How many tests submissions are judged on.")
    format: str = Field(description="`plain` or `kattis` layout.")
    interactive: bool
    max_score: float
    feedback: str = Field(description="What a submitter sees of each test: `verdict`, `verdict+time` or "
                                      "`first_difference`.")
    added_at: str
    samples: list[SampleOut] = Field(description="The tests the package marks public (Kattis `data/sample/`, "
                                                 "or `samples` in problem.toml), at most 20.")


class ProblemSummary(BaseModel):
    """One problem of the list."""

    id: str
    title: str
    tests: int
    format: str
    added_at: str


class ProblemPage(BaseModel):
    """A page of problems, by id."""

    items: list[ProblemSummary]
    next_cursor: str | None


LanguageText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=50)]
LanguageNumber = Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
Limit = Annotated[int, Field(strict=True, ge=1, le=LIMIT_MAX)]


class LanguageOut(BaseModel):
    """A language submissions may name."""

    id: str
    name: str
    aliases: list[str] = Field(description="Other names `language` may give (`1` is C++17).")
    extensions: list[str]


class LanguageList(BaseModel):
    """Every language a loaded plugin registers (whether a worker has its toolchain is the worker's business:
    a submission in a language it lacks fails with `language_unavailable`)."""

    items: list[LanguageOut]


class SubmitIn(BaseModel):
    """A submission in the online-judge shape."""

    model_config = ConfigDict(extra="forbid")

    problem_id: str = Field(min_length=1, max_length=64, description="The id `POST /problems` gave.")
    language: LanguageText | LanguageNumber = Field(
        description="A language id or alias (`cpp`, `python3`, `c++`, …) or its number (`1` is C++17).")
    code: str = Field(description="The source, at most 1 MiB of UTF-8.")
    time_limit: Limit | None = Field(None, description="Cpu ms per test; a value above the problem's is capped "
                                                       "to it. Default: the problem's.")
    memory_limit: Limit | None = Field(None, description="MiB per test; a value above the problem's is capped "
                                                         "to it. Default: the problem's.")


class SubmitOut(BaseModel):
    """The queued submission."""

    job_id: str
    status: str = Field(description="`queued`; follow it with `GET /status/{job_id}`.")
    problem_id: str
    language: str = Field(description="The language id the number or alias named.")
    time_limit: int = Field(description="The cpu ms per test it is judged with (capped to the problem's).")
    memory_limit: int = Field(description="The MiB per test it is judged with (capped to the problem's).")


class StatusOut(BaseModel):
    """A submission's state and, once judged, what the problem's feedback policy shows its submitter."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    finished: bool
    problem_id: str | None = None
    language: str | None = None
    time_limit: int | None = None
    memory_limit: int | None = None
    created_at: str | None = None
    finished_at: str | None = None
    verdict: str | None = Field(None, description="`accepted`, `wrong_answer`, … once judged.")
    verdict_short: str | None = Field(None, description="`AC`, `WA`, `TLE`, …")
    verdict_label: str | None = Field(None, description="`Accepted`, `Wrong Answer`, …")
    score: float | None = None
    max_score: float | None = None
    time_ms: int | None = None
    memory_kib: int | None = None
    tests_total: int | None = None
    tests_run: int | None = None
    message: str | None = None
    feedback: str | None = None
    sandbox: str | None = None
    compile: dict[str, Any] | None = None
    tests: list[dict[str, Any]] | None = None
    error: ErrorInfo | None = Field(None, description="Why the job failed or was cancelled (no verdict).")
    admin: dict[str, Any] | None = Field(None, description="With `?admin=true` (admin role): the full record, "
                                                           "checker messages included.")


PROBLEM_FORM: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The problem package: a zip."},
        "title": {"type": "string", "maxLength": bounds.NAME_MAX_CHARS,
                  "description": "Display name; default: the package's `name`."},
        "time_limit": {"type": "integer", "minimum": 1, "maximum": int(bounds.TIME_LIMIT_MS.high),
                       "description": "Cpu ms per test; default: the package's."},
        "memory_limit": {"type": "integer", "minimum": 1, "maximum": int(bounds.MEMORY_LIMIT_MIB.high),
                         "description": "MiB per test; default: the package's."},
        "feedback": {"type": "string", "enum": [f.value for f in Feedback],
                     "description": "What submitters see; default: the package's, else CONVEYOR_JUDGE_FEEDBACK."},
    }}}}}}


# ---------------------------------------------------------------- views

def _text(path: Any) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(SAMPLE_MAX_BYTES + 1)
    return data[:SAMPLE_MAX_BYTES].decode("utf-8", "replace"), len(data) > SAMPLE_MAX_BYTES


def problem_view(info: ProblemInfo, problem: Problem) -> dict[str, Any]:
    """A problem for every caller: its settings and public samples, nothing of the hidden tests."""
    samples = []
    for test in problem.samples[:MAX_SAMPLES]:
        inp, cut_in = _text(test.input)
        out, cut_out = _text(test.answer) if test.answer is not None else (None, False)
        samples.append({"name": test.name, "input": inp, "output": out, "truncated": cut_in or cut_out})
    return {"id": info.id, "title": info.name or problem.name, "time_limit": problem.time_limit_ms,
            "memory_limit": problem.memory_limit_mib, "output_limit_kib": problem.output_limit_kib,
            "tests": len(problem.tests), "format": problem.format, "interactive": problem.interactive,
            "max_score": problem.max_score, "feedback": resolve(problem.feedback).value,
            "added_at": info.added_at or "", "samples": samples}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _public_error(app: Conveyor, job: Job, admin: bool) -> dict[str, Any]:
    code = job.error_code or "internal_error"
    if admin or code in SUBMITTER_MESSAGES:
        message = job.last_error or code
    else:
        entry = app.plugins.catalog.get(code)
        message = entry.meaning if entry else code
    return {"code": code, "message": message, "detail": None}


def _admin_record(app: Conveyor, job: Job) -> dict[str, Any] | None:
    if not job.attempt_id:
        return None
    key = admin_key(job.id, job.attempt_id)
    try:
        if not app.storage.exists(key):
            return None
        record = json.loads(app.storage.get(key))
    except Exception as exc:  # the admin copy is a convenience: its absence never fails the answer
        log.warning("job %s: cannot read %s (%s)", job.id, key, exc)
        return None
    return record if isinstance(record, dict) else None


def status_view(app: Conveyor, job: Job, admin: bool = False) -> dict[str, Any]:
    """A submission for its submitter: the job's status, then the result exactly as the feedback policy made it."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    out: dict[str, Any] = {
        "job_id": job.id, "status": job.status.value, "finished": job.status in FINAL,
        "problem_id": _str(payload.get("problem_id")), "language": _str(payload.get("language")),
        "time_limit": _int(payload.get("time_limit_ms")), "memory_limit": _int(payload.get("memory_limit_mib")),
    }
    times = job.as_dict()
    out |= {"created_at": times.get("created_at"), "finished_at": times.get("finished_at")}
    result = job.result if isinstance(job.result, dict) else None
    if job.status is JobStatus.SUCCEEDED and result and isinstance(result.get("verdict"), str):
        # the job result is the submitter's view already (conveyor_judge.feedback.result_view)
        out |= {k: result[k] for k in RESULT_KEYS if k in result}
        try:
            verdict = Verdict(result["verdict"])
            out["verdict_short"], out["verdict_label"] = verdict.short, verdict.label
        except ValueError:
            pass
    elif job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        out["error"] = _public_error(app, job, admin)
    if admin:
        out["admin"] = _admin_record(app, job)
    return out


# ---------------------------------------------------------------- problems

def _form_int(form: Any, name: str, high: float) -> int | None:
    raw = form.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"\s*[0-9]{1,12}\s*", raw):
        raise invalid(name, f"must be a whole number from 1 to {high:g}")
    value = int(raw)
    if not 1 <= value <= high:
        raise invalid(name, f"must be a whole number from 1 to {high:g}")
    return value


def _form_text(form: Any, name: str) -> str | None:
    raw = form.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise invalid(name, "must be a text field, not a file")
    return raw


def _read_package(upload: UploadFile, cap: int) -> bytes:
    """The uploaded zip, read in pieces; past ``cap`` bytes it is refused before more is read."""
    upload.file.seek(0)
    chunks: list[bytes] = []
    size = 0
    while chunk := upload.file.read(CHUNK_BYTES):
        size += len(chunk)
        if size > cap:
            raise ApiError(413, "problem_package_too_large",
                           f"the package is larger than {cap} bytes, the most a package within "
                           "CONVEYOR_JUDGE_MAX_UNPACKED_MB can be; shrink it or raise the limit", {"limit": cap})
        chunks.append(chunk)
    return b"".join(chunks)


def package_cap() -> int:
    """The largest zip a package within the unpack bounds may be (the bound ``unpack.open_zip`` applies)."""
    return unpack.UnpackLimits().max_bytes + unpack.ZIP_OVERHEAD_BYTES


@router.post("/problems", status_code=201, response_model=None, summary="Add a problem (admins)",
             openapi_extra=PROBLEM_FORM,
             responses={201: {"model": ProblemOut, "description": "Stored (the same zip again: the same id, "
                                                                 "its title and limits replaced)"},
                        **_errors(413, 429)})
async def add_problem(request: Request, response: Response, identity: AdminDep, app: DeploymentDep
                      ) -> dict[str, Any]:
    """Store a problem package sent as `multipart/form-data` (`file`, optional `title`, `time_limit` ms,
    `memory_limit` MiB, `feedback`). Admins only (403 otherwise).

    A package that breaks a bound gets its catalog code: 422 `invalid_problem_package`,
    `unsafe_problem_package` or `problem_package_too_large` (zip bombs, too many files); 413
    `problem_package_too_large` (or `request_too_large`) when the zip itself is too big.
    Nothing is stored then.
    """
    cap = package_cap()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap + FORM_OVERHEAD_BYTES:
        raise ApiError(413, "problem_package_too_large",
                       f"the request is {length} bytes; a package may be at most {cap} bytes "
                       "(CONVEYOR_JUDGE_MAX_UNPACKED_MB)", {"limit": cap})
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid("file", "the problem package (a zip) is required as a file field")
        title = _form_text(form, "title")
        if title is not None:
            title = title.strip()
            try:
                check_title(title, "title")
            except JudgeError:
                raise invalid("title", f"must be at most {bounds.NAME_MAX_CHARS} printable characters") from None
        time_limit = _form_int(form, "time_limit", bounds.TIME_LIMIT_MS.high)
        memory_limit = _form_int(form, "memory_limit", bounds.MEMORY_LIMIT_MIB.high)
        feedback = _form_text(form, "feedback") or None
        if feedback is not None and feedback not in [f.value for f in Feedback]:
            raise invalid("feedback", f"must be one of {FEEDBACK_NAMES}")
        label = f"package {(upload.filename or 'upload')[:80]!r}"

        def store() -> dict[str, Any]:
            data = _read_package(upload, cap)
            problems = problem_store(app)
            try:
                info = problems.add(data, time_limit_ms=time_limit, memory_limit_mib=memory_limit,
                                    feedback=feedback, label=label, title=title or None)
                return problem_view(info, problems.load(info.id))
            except JudgeError as exc:
                raise judge_error(exc) from None

        view = await run_in_threadpool(store)
    finally:
        await form.close()
    log.info("problem %s added by %s (%d tests)", view["id"], identity.subject, view["tests"])
    response.headers["Location"] = str(request.url_for("judge_problem", problem_id=view["id"]).path)
    return view


@router.get("/problems", response_model=None, summary="List problems",
            responses={200: {"model": ProblemPage}, **_errors()})
def list_problems(app: DeploymentDep, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                  cursor: Annotated[str | None, Query(pattern="^[0-9a-f]{1,64}$",
                                                      description="`next_cursor` of the previous page.")] = None,
                  ) -> dict[str, Any]:
    """Every problem, by id, `limit` at a time: id, title, number of tests, layout, when it was added."""
    problems = problem_store(app)
    items: list[dict[str, Any]] = []
    more = False
    for key in app.storage.list("problems"):
        name = key.rsplit("/", 1)[-1]
        if not re.fullmatch(r"[0-9a-f]{12}\.json", name) or (cursor is not None and name[:-5] <= cursor):
            continue
        if len(items) == limit:
            more = True
            break
        try:
            info = problems.info(name[:-5])
        except (JudgeError, ValueError, TypeError) as exc:  # a record written by hand: skipped, not fatal
            log.warning("problem record %s is unreadable (%s)", key, exc)
            continue
        items.append({"id": info.id, "title": info.name or "", "tests": info.tests, "format": info.format,
                      "added_at": info.added_at or ""})
    return {"items": items, "next_cursor": items[-1]["id"] if more and items else None}


@router.get("/problems/{problem_id}", name="judge_problem", response_model=None, summary="Read a problem",
            responses={200: {"model": ProblemOut}, **_errors(404)})
def get_problem(problem_id: Annotated[str, Path(max_length=64)], app: DeploymentDep) -> dict[str, Any]:
    """Title, limits, the number of tests and the public samples; never the hidden tests' data.
    404 `problem_not_found` for an unknown id."""
    problems = problem_store(app)
    try:
        info = problems.info(problem_id)
        return problem_view(info, problems.load(info.id))
    except JudgeError as exc:
        raise no_problem(problem_id) if exc.code == "problem_not_found" else judge_error(exc) from None


# ---------------------------------------------------------------- submissions

@router.get("/languages", response_model=None, summary="Languages a submission may name",
            responses={200: {"model": LanguageList}, **_errors()})
def languages(app: DeploymentDep) -> dict[str, Any]:
    """Every registered language: its id, name, aliases (what `POST /submit` accepts as `language`) and
    file extensions."""
    return {"items": [{"id": lang.id, "name": lang.name, "aliases": list(lang.aliases),
                       "extensions": list(lang.extensions)}
                      for lang in sorted(app.plugins.registry(LANGUAGES), key=lambda x: x.id)]}


@router.post("/submit", status_code=201, response_model=None, summary="Submit a program",
             responses={201: {"model": SubmitOut, "description": "Queued"}, **_errors(404, 413, 429)})
def submit(request: Request, response: Response, body: Annotated[SubmitIn, Body()], scope: ScopeDep,
           app: AppDep) -> dict[str, Any]:
    """Judge `code` on a problem, in the caller's tenant and org.

    `language` is an id or alias, or a number (`1` is C++17). `time_limit` (ms) and
    `memory_limit` (MiB) are honoured up to the problem's own: a larger value is capped
    to it. 422 `unknown_language`, 404 `problem_not_found`, 413 `source_too_large`; the
    source is stored under `submissions/{tenant}/` and a `judge.submission` job queued.
    """
    tenant = write_tenant(scope)
    try:
        lang = find_language(app.plugins.registry(LANGUAGES), str(body.language))
    except JudgeError as exc:
        raise judge_error(exc) from None
    try:
        source = body.code.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid("code", f"is not valid Unicode text ({exc.reason} at character {exc.start})") from None
    if len(source) > SOURCE_MAX_BYTES:
        raise ApiError(413, "source_too_large", f"the source is {len(source)} bytes of UTF-8; the limit is "
                                                f"{SOURCE_MAX_BYTES}", {"limit": SOURCE_MAX_BYTES})
    try:
        problem = problem_store(app).load(body.problem_id)
    except JudgeError as exc:
        raise no_problem(body.problem_id) if exc.code == "problem_not_found" else judge_error(exc) from None
    limited = capped_limits(problem, body.time_limit, body.memory_limit)
    key = store_source(app.storage, tenant, f"{uuid.uuid4().hex}/{lang.source_name}", source)
    payload = {"problem_id": problem.id, "language": lang.id, "source_key": key, "source_owned": True,
               "time_limit_ms": limited.time_limit_ms, "memory_limit_mib": limited.memory_limit_mib}
    try:
        job_id = app.submit(KIND, payload, tenant=tenant, org=scope.org)
    except BaseException:
        try:
            app.storage.delete(key)
        except Exception as exc:  # the refusal matters more than the orphan
            log.warning("cannot remove the source %s of a refused submission (%s)", key, exc)
        raise
    response.headers["Location"] = str(request.url_for("judge_status", job_id=job_id).path)
    return {"job_id": job_id, "status": JobStatus.QUEUED.value, "problem_id": problem.id, "language": lang.id,
            "time_limit": limited.time_limit_ms, "memory_limit": limited.memory_limit_mib}


@router.get("/status/{job_id}", name="judge_status", response_model=None, summary="A submission's verdict",
            responses={200: {"model": StatusOut}, **_errors(404)})
def status(job_id: str, identity: IdentityDep, scope: ScopeDep, app: AppDep,
           admin: Annotated[bool, Query(description="Admins: add the full record (checker messages, "
                                                    "stderr tails) as `admin`.")] = False) -> dict[str, Any]:
    """The submission's `status`; once judged, its verdict, score and per-test rows exactly as the
    problem's feedback policy lets the submitter see them (never the expected output under the
    default policy). 404 for another tenant's job, a job of another kind, or no job at all."""
    if admin and not identity.admin:
        raise ApiError(403, "forbidden", "admin=true is for the admin role")
    job = visible_job(app, scope, job_id)
    if job.kind != KIND:
        raise not_found()
    return status_view(app, job, admin)


def add_routes(router_of_plugin: APIRouter, app: Conveyor) -> None:
    """Add the judge's routes to the router ``conveyor_api_routes`` gave the plugin."""
    router_of_plugin.include_router(router)
