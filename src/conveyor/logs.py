"""Log output: the text lines people read, or one JSON object per line for log pipelines.

``CONVEYOR_LOG_FORMAT=json`` (or ``conveyor --log-format json``) switches every record to
JSON: ``time``, ``level``, ``logger``, ``message``, and for the per-state-change lines of
``conveyor.jobs`` the ``action`` and each ``key=value`` field as its own member. A record
written while a handler runs (the worker's ``Tracing`` middleware) also carries the job's
``job_id``, ``attempt_id``, ``kind`` and ``trace_id``.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from conveyor.errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

#: the job whose handler runs in this thread (set by the worker's ``Tracing`` middleware), for log records
job_fields: ContextVar[dict[str, Any] | None] = ContextVar("conveyor_job_fields", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the structured fields of a state-change line become members."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00",
                                                                                                          "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "conveyor_fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        job = job_fields.get()
        if job:
            out.update({k: v for k, v in job.items() if k not in out})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def check_format(value: str) -> str:
    """``text`` or ``json``; ConfigError naming the choices otherwise."""
    fmt = (value or "text").strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(f"CONVEYOR_LOG_FORMAT must be text or json, got {value!r}")
    return fmt


def setup(level: str, fmt: str = "text") -> None:
    """Send every record at ``level`` or above to stderr, as text lines or JSON objects."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if check_format(fmt) == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
