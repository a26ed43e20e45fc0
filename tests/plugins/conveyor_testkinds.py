"""Job kinds used by the test suite (loaded with CONVEYOR_PLUGINS=conveyor_testkinds)."""

from __future__ import annotations

import os
import signal
import time

from conveyor import hookimpl
from conveyor.errors import JobError
from conveyor.kinds import JobKind, RetryPolicy


def log_line(ctx):
    """Write one log record from inside the handler (the worker's Tracing middleware tags it)."""
    import logging
    logging.getLogger("conveyor.testkinds").info(ctx.payload["message"])
    return {"logged": True}


def crash(ctx):
    """A poison job: kills the worker process that runs it."""
    os.kill(os.getpid(), signal.SIGKILL)


def artifact(ctx):
    """Writes an artifact under this attempt's prefix and returns its key."""
    key = ctx.key("out.txt")
    ctx.storage.put(key, f"attempt {ctx.attempt_id}".encode())
    return {"key": key}


def slow_ignoring_token(ctx):
    """Busy-waits past its timeout without looking at the cancellation token."""
    end = time.monotonic() + float(ctx.payload.get("seconds", 3))
    while time.monotonic() < end:
        time.sleep(0.01)
    return {"finished": True}


def sleepy(ctx):
    """Sleeps honouring cancellation; its kind has a short timeout."""
    ctx.sleep(float(ctx.payload.get("seconds", 5)))
    return {}


def flaky(ctx):
    """Fails retryably until attempt `succeed_on`, then succeeds."""
    if ctx.attempt_id < int(ctx.payload.get("succeed_on", 2)):
        raise JobError("connector_failed", f"attempt {ctx.attempt_id} fails")
    return {"attempt": ctx.attempt_id}


def not_json(ctx):
    """Returns a value that cannot be stored as JSON."""
    import datetime
    return {"when": datetime.datetime.now()}


def ignore_cancel(ctx):
    """Runs on after cancellation, never looking at its token."""
    end = time.monotonic() + float(ctx.payload.get("seconds", 30))
    while time.monotonic() < end:
        time.sleep(0.02)
    return {}


EVENTS = []


@hookimpl
def conveyor_on_event(event):
    EVENTS.append(event)


def boom(ctx):
    """An unexpected exception."""
    raise RuntimeError("unexpected")


@hookimpl
def conveyor_register_job_kinds(registry):
    registry.add(JobKind("test.crash", crash))
    registry.add(JobKind("test.log", log_line))
    registry.add(JobKind("test.artifact", artifact))
    registry.add(JobKind("test.ignore_timeout", slow_ignoring_token, timeout_s=0.3,
                         retry=RetryPolicy(max_attempts=1)))
    registry.add(JobKind("test.timeout", sleepy, timeout_s=0.3, retry=RetryPolicy(max_attempts=2, base_seconds=0.05)))
    registry.add(JobKind("test.flaky", flaky, retry=RetryPolicy(base_seconds=0.05, max_seconds=0.2)))
    registry.add(JobKind("test.not_json", not_json))
    registry.add(JobKind("test.ignore_cancel", ignore_cancel))
    registry.add(JobKind("test.boom", boom, retry=RetryPolicy(max_attempts=2, base_seconds=0.05)))
