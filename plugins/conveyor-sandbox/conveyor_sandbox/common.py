"""Pieces both backends share: status decision, uid leases, stdin, work-directory ownership."""

from __future__ import annotations

import errno
import fcntl
import os
import signal as _signal
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conveyor_sandbox.contract import Limits, Status

BOX_UID_BASE = int(os.environ.get("CONVEYOR_SANDBOX_UID_BASE", "60000"))
BOX_UID_COUNT = int(os.environ.get("CONVEYOR_SANDBOX_UID_COUNT", "1000"))


def classify(
    *,
    limits: Limits,
    exit_code: int | None,
    signal: int | None,
    cpu_ms: int,
    killed_wall: bool,
    killed_cpu: bool,
    oom_killed: bool,
    output_over: bool,
    disk_full: bool = False,
    disk_bytes: int = 0,
) -> Status:
    """Decide a run's status from what was observed; the first matching rule wins.

    Files on tmpfs (the box's /tmp, a workspace) are memory charged to the box: when the
    memory limit ran out while they held at least half of it, the box was filling its
    disk, and the run ends ``output_limit``.
    """
    if oom_killed:
        if limits.memory_kib is not None and disk_bytes * 2 >= limits.memory_kib * 1024:
            return Status.OUTPUT_LIMIT
        return Status.MEMORY_LIMIT
    if killed_cpu or (limits.cpu_ms is not None and cpu_ms > limits.cpu_ms) or signal == _signal.SIGXCPU:
        return Status.TIME_LIMIT
    if killed_wall:
        return Status.WALL_TIME_LIMIT
    if signal == _signal.SIGSYS:
        return Status.SYSCALL_DENIED
    if signal == _signal.SIGXFSZ or output_over or disk_full:
        return Status.OUTPUT_LIMIT
    if signal is not None:
        return Status.SIGNALLED
    if exit_code:
        return Status.RUNTIME_ERROR
    return Status.OK


def file_at_limit(workdir: str | os.PathLike[str], limit: int, most: int = 256) -> bool:
    """Whether a regular file at the top of ``workdir`` reached ``limit`` bytes (looks at ``most`` entries)."""
    try:
        with os.scandir(workdir) as it:
            for i, e in enumerate(it):
                if i >= most:
                    break
                try:
                    if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_size >= limit:
                        return True
                except OSError:
                    continue
    except OSError:
        return False
    return False


def wait_status(wstatus: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of a wait status."""
    if os.WIFSIGNALED(wstatus):
        return None, os.WTERMSIG(wstatus)
    if os.WIFEXITED(wstatus):
        return os.WEXITSTATUS(wstatus), None
    return None, None


def stdin_file(data: bytes | None) -> IO[bytes]:
    """A readable file holding ``data`` (or /dev/null) to become the program's stdin."""
    if data is None:
        return open(os.devnull, "rb")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        from conveyor_sandbox.contract import SandboxArgumentError

        raise SandboxArgumentError("stdin must be bytes or None")
    fd = os.memfd_create("conveyor-stdin", os.MFD_CLOEXEC)
    f = os.fdopen(fd, "w+b")
    f.write(data)
    f.flush()
    f.seek(0)
    return f


class UidPool:
    """Leases one unprivileged uid per concurrent box, across threads and processes."""

    def __init__(self, base: int = BOX_UID_BASE, count: int = BOX_UID_COUNT, lockdir: str | None = None) -> None:
        self.base, self.count = base, count
        self.lockdir = Path(lockdir or os.environ.get("CONVEYOR_SANDBOX_LOCKDIR", "/run/conveyor-sandbox"))
        self._lock = threading.Lock()
        self._in_use: set[int] = set()
        self._fds: dict[int, int] = {}
        self._dir_made = False

    def acquire(self) -> int:
        """A uid no other box on this host is using now."""
        with self._lock:
            if not self._dir_made:
                self.lockdir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._dir_made = True
            for uid in range(self.base, self.base + self.count):
                if uid in self._in_use:
                    continue
                fd = self._fds.get(uid)
                if fd is None:
                    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                    fd = os.open(self.lockdir / f"uid-{uid}.lock", flags, 0o600)
                    self._fds[uid] = fd
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        continue
                    raise
                self._in_use.add(uid)
                return uid
        raise RuntimeError(f"all {self.count} sandbox uids from {self.base} are in use")

    def release(self, uid: int) -> None:
        """Give a uid back."""
        with self._lock:
            fd = self._fds.get(uid)
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._in_use.discard(uid)


@dataclass
class WorkdirOwnership:
    """Hands the work directory to the box uid, and takes it back after, without following links."""

    path: Path
    uid: int
    _fd: int = -1
    _orig: tuple[int, int, int] = (0, 0, 0o700)

    def __enter__(self) -> WorkdirOwnership:
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        self._orig = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        os.fchown(self._fd, self.uid, self.uid)
        os.fchmod(self._fd, 0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            # the box's uid loses the directory: a later box with the same uid cannot reach it
            os.fchown(self._fd, self._orig[0], self._orig[1])
            os.fchmod(self._fd, self._orig[2])
        finally:
            os.close(self._fd)


_POOL: UidPool | None = None
_POOL_LOCK = threading.Lock()


def uid_pool() -> UidPool:
    """The process-wide uid pool."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = UidPool()
        return _POOL


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (one of another user counts): what sweeps ask before removing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
