"""Job kinds as plugins register them, and what a handler receives."""

from __future__ import annotations

import random
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import Cancelled, JobError

if TYPE_CHECKING:
    from conveyor.storage import Storage


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a retryable failure is tried again."""

    max_attempts: int | None = None  # None → the deployment's CONVEYOR_MAX_ATTEMPTS
    base_seconds: float | None = None
    max_seconds: float | None = None

    def delay(self, attempt: int, base: float, cap: float) -> float:
        """Seconds before retry number ``attempt`` (1-based): exponential with jitter."""
        b = self.base_seconds if self.base_seconds is not None else base
        c = self.max_seconds if self.max_seconds is not None else cap
        raw = min(c, b * (2 ** max(0, attempt - 1)))
        return raw * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class JobKind:
    """A named kind of job: its handler, retry policy and timeout."""

    name: str
    handler: Callable[[JobContext], Any]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = None
    description: str = ""
    #: the payload key naming the job's input file: a submit that gives no ``file_id`` gets it from there
    file_id_key: str | None = None
    #: what a caller without the admin role sees of a job of this kind: takes the job's JSON (the
    #: core's redaction done) and returns it without what only operators may see, such as storage keys
    public_view: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class CancelToken:
    """Set when the attempt must stop: cancelled, timed out or lease lost."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self._callbacks: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def cancel(self, reason: str) -> None:
        """Fire the token once with a reason; later calls are ignored."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(reason)

    @property
    def cancelled(self) -> bool:
        """Whether the token has fired."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the token fired meanwhile."""
        return self._event.wait(seconds)

    def raise_if_cancelled(self) -> None:
        """Raise Cancelled if the token has fired."""
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the token fires (at once if it already has)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback(self.reason or "cancelled")


@dataclass
class JobContext:
    """Everything a handler needs for one attempt."""

    job_id: str
    attempt_id: int
    kind: str
    payload: Any
    tenant_id: str
    org_id: str | None
    file_id: str | None
    trace_id: str | None
    token: CancelToken
    storage: Storage
    services: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """Storage key prefix of this attempt: ``jobs/{job_id}/{attempt_id}``."""
        return f"jobs/{self.job_id}/{self.attempt_id}"

    def key(self, name: str) -> str:
        """Storage key of an artifact of this attempt."""
        return f"{self.prefix}/{name}"

    def sleep(self, seconds: float) -> None:
        """Sleep, raising Cancelled as soon as the attempt must stop."""
        if self.token.wait(seconds):
            self.token.raise_if_cancelled()

    def run_subprocess(self, argv: Sequence[str], *, timeout: float | None = None, input: bytes | None = None,
                       **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """Run a child process (bytes in, bytes out) killed with its group when the attempt stops."""
        for bad in ("text", "universal_newlines", "encoding", "errors"):
            if kwargs.get(bad):
                raise TypeError(f"run_subprocess works in bytes; decode the output yourself instead of {bad}=")
        proc = subprocess.Popen(argv, start_new_session=True, stdout=kwargs.pop("stdout", subprocess.PIPE),
                                stderr=kwargs.pop("stderr", subprocess.PIPE),
                                stdin=subprocess.PIPE if input is not None else kwargs.pop("stdin", None), **kwargs)

        def _kill(_reason: str) -> None:
            import os
            import signal
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        self.token.on_cancel(_kill)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill("timeout")
            proc.communicate()
            raise JobError("timeout", f"{argv[0]} ran longer than {timeout}s") from None
        self.token.raise_if_cancelled()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
