"""One error shape for every answer that is not a success: ``{"error": {"code", "message", "detail"}}``.

Codes come from the error catalog (``conveyor errors``). No answer carries a traceback:
an unexpected exception is logged and answered ``500 internal_error``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.errors import (
    ConveyorError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    QueueUnavailable,
    RetryLater,
)

log = logging.getLogger("conveyor.api")

#: seconds a client is told to wait when a backend is down
UNAVAILABLE_RETRY_AFTER_S = 5


class ApiError(Exception):
    """An answer with a status, a catalog code, a message and optional detail."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = dict(headers or {})


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The JSON every error answer carries."""
    return {"error": {"code": code, "message": message, "detail": detail}}


def error_response(status: int, code: str, message: str, detail: Any = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error answer."""
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=dict(headers or {}))


def unauthorized(message: str) -> ApiError:
    """401 with the challenge RFC 6750 asks for."""
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def not_found(what: str = "job") -> ApiError:
    """404 that never says whether the object exists for someone else."""
    return ApiError(404, "not_found", f"no such {what}")


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header of whole seconds (at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        msg = str(e.get("msg", ""))
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            where = e.get("loc", ("body", "?"))[-1]
            msg = f"the body is not valid JSON: {ctx.get('error', 'decode error')} at character {where}"
            out.append({"loc": ["body"], "msg": msg, "type": "json_invalid"})
            continue
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": msg, "type": str(e.get("type", ""))})
    return out


def install(api: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc)
        first: dict[str, Any] = detail[0] if detail else {"loc": [], "msg": "invalid"}
        where = ".".join(p for p in first["loc"] if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        if len(detail) > 1:
            message += f" (and {len(detail) - 1} more problem{'s' if len(detail) > 2 else ''}, see detail)"
        return error_response(422, "invalid_request", message, detail)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return error_response(404, "not_found", "no such route", None, headers)
        if exc.status_code == 400:  # the framework could not parse the body
            return error_response(422, "invalid_request", f"the body cannot be read: {exc.detail}", None, headers)
        if exc.status_code == 413:
            return error_response(413, "request_too_large", str(exc.detail), None, headers)
        code = "unauthorized" if exc.status_code == 401 else "forbidden" if exc.status_code == 403 \
            else "invalid_request"
        return error_response(exc.status_code, code, str(exc.detail), None, headers)

    @api.exception_handler(InvalidJob)
    async def _invalid_job(request: Request, exc: InvalidJob) -> JSONResponse:
        status = 413 if exc.code == "payload_too_large" else 422
        return error_response(status, exc.code, exc.message, {"field": exc.field} if exc.field else None)

    @api.exception_handler(RetryLater)
    async def _retry_later(request: Request, exc: RetryLater) -> JSONResponse:
        return error_response(429, exc.code, str(exc), {"retry_after_s": exc.retry_after_s},
                              retry_after(exc.retry_after_s))

    @api.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return error_response(404, "not_found", "no such job")

    @api.exception_handler(IllegalTransition)
    async def _illegal(request: Request, exc: IllegalTransition) -> JSONResponse:
        return error_response(409, "illegal_transition", str(exc), {"status": exc.current, "target": exc.target})

    @api.exception_handler(QueueUnavailable)
    async def _queue_down(request: Request, exc: QueueUnavailable) -> JSONResponse:
        log.warning("%s %s: queue unavailable: %s", request.method, request.url.path, exc)
        return error_response(503, "unavailable", "the queue is unreachable; retry later", None,
                              retry_after(UNAVAILABLE_RETRY_AFTER_S))

    @api.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        first = str(exc.orig or exc).splitlines()[0] if str(exc.orig or exc) else type(exc).__name__
        if type(exc).__name__ in ("OperationalError", "InterfaceError") or exc.connection_invalidated:
            log.warning("%s %s: database unavailable: %s", request.method, request.url.path, first)
            return error_response(503, "unavailable", "the database is unreachable; retry later", None,
                                  retry_after(UNAVAILABLE_RETRY_AFTER_S))
        log.error("%s %s: database error: %s", request.method, request.url.path, first, exc_info=exc)
        return error_response(500, "internal_error", "an unexpected database error; the server log has it")

    @api.exception_handler(ConveyorError)
    async def _conveyor(request: Request, exc: ConveyorError) -> JSONResponse:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_response(500, "internal_error", f"the server could not do this ({type(exc).__name__}); "
                                                     "its log says why")

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return error_response(500, "internal_error", "an unexpected error; the server log has its traceback")
