"""The sandbox contract judges use: limits in, a measured result out, whatever the backend.

A backend is any object with ``id``, ``available()`` and ``run(...)`` registered through
``conveyor_register_sandboxes``; ``choose_sandbox`` picks the strongest one that works here.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class Status(str, Enum):
    """How a sandboxed run ended."""

    OK = "ok"
    TIME_LIMIT = "time_limit"
    WALL_TIME_LIMIT = "wall_time_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    RUNTIME_ERROR = "runtime_error"
    SIGNALLED = "signalled"
    SYSCALL_DENIED = "syscall_denied"
    SANDBOX_ERROR = "sandbox_error"

    def __str__(self) -> str:
        return self.value


class SandboxArgumentError(ValueError):
    """A run was asked for with arguments that make no sense (caller's mistake)."""


class SandboxUnavailable(RuntimeError):
    """No registered sandbox backend can run on this host."""


def _positive(name: str, value: int | None, *, allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise SandboxArgumentError(f"{name} is required")
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise SandboxArgumentError(f"{name} must be an integer, got {value!r}")
    if value <= 0:
        raise SandboxArgumentError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class Limits:
    """What one run may use; None means no limit of that kind."""

    cpu_ms: int | None = 2000
    wall_ms: int | None = None  # None: 2 × cpu_ms + 1000
    memory_kib: int | None = 256 * 1024
    output_bytes: int = 64 * 1024  # kept of each of stdout and stderr
    output_kill: bool = True  # past output_bytes on either stream the box is killed (output_limit)
    file_size_kib: int | None = 64 * 1024
    pids: int = 64
    open_files: int = 256
    stack_kib: int | None = None  # None: as large as memory_kib
    tmp_kib: int = 16 * 1024  # size of the private /tmp (and of /dev/shm)
    tmp_inodes: int = 4096  # files and directories the private /tmp (and /dev/shm) may hold
    network: bool = False
    allow_exec: bool = False  # may the program execute files in its work directory
    socket_errno: bool = False  # non-AF_UNIX socket() fails with EACCES instead of killing (JVM start-up probes)

    def __post_init__(self) -> None:
        for name in ("cpu_ms", "wall_ms", "memory_kib", "file_size_kib", "stack_kib"):
            _positive(name, getattr(self, name))
        for name in ("output_bytes", "pids", "open_files", "tmp_kib", "tmp_inodes"):
            _positive(name, getattr(self, name), allow_none=False)
        if self.cpu_ms is None and self.wall_ms is None:
            raise SandboxArgumentError("give at least one of cpu_ms and wall_ms: a run must end")

    @property
    def effective_wall_ms(self) -> int:
        """The wall limit actually applied."""
        if self.wall_ms is not None:
            return self.wall_ms
        assert self.cpu_ms is not None
        return 2 * self.cpu_ms + 1000


@dataclass(frozen=True)
class RunResult:
    """One run, measured, with how each figure was obtained and what was enforced."""

    status: Status
    backend: str
    exit_code: int | None = None
    signal: int | None = None
    cpu_ms: int = 0
    wall_ms: int = 0
    memory_kib: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_len: int = 0
    stderr_len: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    memory_source: str = "none"  # cgroup_peak | cgroup_v1_max_usage | ru_maxrss | none
    time_source: str = "none"  # cgroup_cpu_stat | rusage | none
    enforced: tuple[str, ...] = field(default_factory=tuple)
    oom_killed: bool = False
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        """True when the program ran to a zero exit within every limit."""
        return self.status is Status.OK

    def as_dict(self, *, text: bool = True) -> dict[str, Any]:
        """Plain-JSON form; output decoded as UTF-8 with replacement when ``text``."""
        d = asdict(self)
        d["status"] = self.status.value
        d["enforced"] = list(self.enforced)
        for k in ("stdout", "stderr"):
            raw: bytes = d[k]
            d[k] = raw.decode("utf-8", "replace") if text else raw.hex()
        return d


@runtime_checkable
class Sandbox(Protocol):
    """A sandbox backend."""

    id: str
    priority: int  # higher wins in choose_sandbox

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why not."""
        ...

    def run(
        self,
        argv: Sequence[str],
        *,
        limits: Limits | None = None,
        stdin: bytes | None = None,
        workdir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        readonly_paths: Iterable[str | os.PathLike[str]] = (),
    ) -> RunResult:
        """Run ``argv`` in a fresh box; never raises for the program's behaviour."""
        ...


def choose_sandbox(registry: Iterable[Any], prefer: str | None = None) -> Sandbox:
    """The best available backend (highest priority), or ``prefer`` if named and available."""
    backends = [b for b in registry if isinstance(b, Sandbox)]
    reasons = []
    if prefer is not None:
        for b in backends:
            if b.id == prefer:
                ok, why = b.available()
                if ok:
                    return b
                raise SandboxUnavailable(f"sandbox {prefer!r} is not available here: {why}")
        known = ", ".join(sorted(b.id for b in backends)) or "none"
        raise SandboxUnavailable(f"no sandbox named {prefer!r} is registered (registered: {known})")
    for b in sorted(backends, key=lambda b: -int(getattr(b, "priority", 0))):
        ok, why = b.available()
        if ok:
            return b
        reasons.append(f"{b.id}: {why}")
    raise SandboxUnavailable("no sandbox backend can run here: " + ("; ".join(reasons) or "none registered"))


def check_argv(argv: Sequence[str]) -> list[str]:
    """Validate a command line: a non-empty sequence of strings without NUL bytes."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence) or not argv:
        raise SandboxArgumentError("argv must be a non-empty list of strings")
    out = []
    for a in argv:
        if not isinstance(a, str):
            raise SandboxArgumentError(f"argv items must be strings, got {a!r}")
        if "\0" in a:
            raise SandboxArgumentError("argv items must not contain NUL bytes")
        out.append(a)
    return out


def check_workdir(workdir: str | os.PathLike[str]) -> Path:
    """Validate a work directory: an existing real directory, returned absolute."""
    p = Path(os.path.abspath(os.fspath(workdir)))
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise SandboxArgumentError(f"work directory {str(p)!r} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SandboxArgumentError(f"work directory {str(p)!r} is not a directory (symlinks are refused)")
    if p == Path("/"):
        raise SandboxArgumentError("the work directory cannot be /")
    return p


def check_env(env: Mapping[str, str] | None, workdir: Path) -> dict[str, str]:
    """The program's environment: ``env`` as given, or a minimal default."""
    if env is None:
        return {"PATH": DEFAULT_PATH, "HOME": str(workdir), "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    out = {}
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or "=" in k or "\0" in k + v:
            raise SandboxArgumentError(f"bad environment entry {k!r}={v!r}")
        out[k] = v
    return out


def check_readonly_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute forms of the read-only paths, or SandboxArgumentError naming one that is missing."""
    out = []
    for p in paths:
        rp = os.path.abspath(os.fspath(p))
        if not os.path.exists(rp):
            raise SandboxArgumentError(f"read-only path {rp!r} does not exist")
        out.append(rp)
    return out


def safe_read(workdir: str | os.PathLike[str], name: str, max_bytes: int = 1 << 20) -> bytes:
    """Read a file the program left in its work directory, refusing symlinks and escapes."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        raise SandboxArgumentError(f"{name!r} is not a plain relative path inside the work directory")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    dfd = os.open(os.fspath(workdir), flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, flags | os.O_DIRECTORY, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        try:
            fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PermissionError(errno.ELOOP, f"{name!r} is a symlink; refusing to follow it") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionError(errno.EINVAL, f"{name!r} is not a regular file")
            chunks, left = [], max_bytes
            while left > 0:
                b = os.read(fd, min(left, 1 << 16))
                if not b:
                    break
                chunks.append(b)
                left -= len(b)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


__all__ = [
    "DEFAULT_PATH",
    "Limits",
    "RunResult",
    "Sandbox",
    "SandboxArgumentError",
    "SandboxUnavailable",
    "Status",
    "check_argv",
    "check_env",
    "check_workdir",
    "choose_sandbox",
    "safe_read",
]
