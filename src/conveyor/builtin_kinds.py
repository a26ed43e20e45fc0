"""Built-in job kinds, loaded through the ``conveyor`` entry points like any plugin."""

from __future__ import annotations

from typing import Any

from conveyor.errors import CATALOG, JobError
from conveyor.hookspecs import hookimpl
from conveyor.kinds import JobContext, JobKind, RetryPolicy
from conveyor.registry import Registry


def echo(ctx: JobContext) -> Any:
    """Return the payload."""
    return ctx.payload


def sleep(ctx: JobContext) -> dict[str, Any]:
    """Sleep ``payload.seconds``, stopping early when cancelled."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    seconds = payload.get("seconds", 1)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise JobError("invalid_payload", f"payload.seconds must be a number >= 0, got {seconds!r}")
    ctx.sleep(float(seconds))
    return {"slept": seconds}


def fail(ctx: JobContext) -> None:
    """Raise the error code in ``payload.code`` (a way to test retry policies)."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    code = payload.get("code", "internal_error")
    app = ctx.services.get("app")
    catalog = app.plugins.catalog if app is not None else CATALOG
    if not isinstance(code, str) or code not in catalog:
        raise JobError("invalid_payload", f"payload.code {code!r} is not in the error catalog; "
                                          "see `conveyor errors`")
    retryable = payload.get("retryable")
    raise JobError(code, str(payload.get("message") or f"conveyor.fail raised {code}"),
                   retryable=retryable if isinstance(retryable, bool) else None)


@hookimpl
def conveyor_register_job_kinds(registry: Registry[JobKind]) -> None:
    """Register ``conveyor.echo``, ``conveyor.sleep`` and ``conveyor.fail``."""
    registry.add(JobKind("conveyor.echo", echo, description="returns its payload"))
    registry.add(JobKind("conveyor.sleep", sleep, description="sleeps payload.seconds, honouring cancellation"))
    registry.add(JobKind("conveyor.fail", fail, retry=RetryPolicy(base_seconds=0.2, max_seconds=5.0),
                         description="raises the error code in payload.code"))
