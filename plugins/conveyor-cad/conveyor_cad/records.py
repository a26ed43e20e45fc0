"""Records of the CAD plugin: statuses, stages, converter outputs and derivatives."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class ConversionStatus(str, Enum):
    """``conveyor_files.conversion_status``."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"


class Stage(str, Enum):
    """Where a conversion stopped (``conversion_error.stage``)."""

    FETCH = "fetch"
    SNIFF = "sniff"
    READ = "read"
    MESH = "mesh"
    RENDER = "render"
    WRITE = "write"


class Routing(str, Enum):
    """Where a format is converted."""

    LOCAL = "local"
    CONNECTOR = "connector"
    CONNECTOR_THEN_LOCAL = "connector-then-local"


class ConversionError(Exception):
    """Raised by a converter: the input cannot be converted (a code, a message, a stage)."""

    def __init__(self, code: str, message: str, stage: Stage | str = Stage.READ, *,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stage = Stage(stage)
        self.retryable = retryable

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (self.__class__, (self.code, self.message, self.stage.value), dict(self.__dict__))


@dataclass(frozen=True)
class ConvertOutput:
    """What a converter's ``convert`` returns: files it wrote in ``out_dir`` and what it learned."""

    geometry: Path | None = None
    preview: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: stages that failed while others succeeded: ``{"stage", "code", "message"}`` (makes the result partial)
    stage_errors: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Derivative:
    """One artifact in the job result's manifest."""

    role: str  # geometry | preview | metadata
    format: str
    mime: str
    path: str | None
    size: int
    sha256: str | None
    status: str  # ok | failed | skipped
    messages: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {"role": self.role, "format": self.format, "mime": self.mime, "path": self.path, "size": self.size,
                "sha256": self.sha256, "status": self.status, "messages": list(self.messages)}


@dataclass(frozen=True)
class FileRecord:
    """A ``conveyor_files`` row."""

    id: str
    tenant_id: str
    org_id: str | None
    filename: str
    system_path: str
    size: int
    sha256: str | None
    content_type: str | None
    cad_format: str | None
    preview_path: str | None
    geometry_path: str | None
    conversion_status: str | None
    conversion_error: dict[str, Any] | None
    attributes: dict[str, Any] | None
    created_at: Any
    updated_at: Any

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON (timestamps as ISO-8601 strings)."""
        d = dict(self.__dict__)
        for k in ("created_at", "updated_at"):
            v = d[k]
            d[k] = v.isoformat() if hasattr(v, "isoformat") else v
        return d
