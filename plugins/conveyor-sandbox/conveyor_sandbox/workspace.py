"""Work directories with a total bound: a tmpfs of fixed bytes and inodes per workspace.

A box writes only into its work directory, its /tmp and its /dev/shm.  The last two are
bounded tmpfs inside the box; a work directory is the caller's, so a program could fill
the host's disk through it (file by file under RLIMIT_FSIZE).  A workspace is a fresh
tmpfs mounted by the worker (root) at a private path, sized in bytes and inodes: what a
box writes there is counted in memory, charged to the box's memory cgroup as it writes,
and gone in one unmount however deep or wide the tree it left.  Without root, a
workspace is a plain temporary directory and says so (``bounded`` is False).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from conveyor_sandbox.common import pid_alive

log = logging.getLogger("conveyor_sandbox.contract")

DEFAULT_ROOT = "/run/conveyor-sandbox/ws"
DEFAULT_SIZE_KIB = 64 * 1024
DEFAULT_INODES = 8192
MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 0x2, 0x4
TMPFS_MAGIC = 0x01021994

_NAME = re.compile(r"^ws-(\d+)-\d+$")
_counter = itertools.count()
_swept: set[str] = set()
_lock = threading.Lock()


def workspace_root() -> Path:
    """Where workspaces are mounted (``CONVEYOR_SANDBOX_WORKSPACES``), a root-only directory."""
    return Path(os.environ.get("CONVEYOR_SANDBOX_WORKSPACES") or DEFAULT_ROOT)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(path: Path, size_kib: int, inodes: int) -> None:
    data = f"size={size_kib}k,nr_inodes={inodes},mode=0755".encode()
    if _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting a tmpfs workspace at {path}: {os.strerror(err)}")


def _unmount(path: Path) -> None:
    if _libc().umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (any more)
            raise OSError(err, f"unmounting workspace {path}: {os.strerror(err)}")


def sweep(root: Path | None = None) -> list[str]:
    """Unmount and remove the workspaces of processes that are gone (a worker killed with -9)."""
    root = root or workspace_root()
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _NAME.match(name)
        if not m or pid_alive(int(m.group(1))):
            continue
        path = root / name
        try:
            _unmount(path)
            os.rmdir(path)
            removed.append(str(path))
        except OSError as exc:  # reported, never fatal: a leftover must not block new work
            log.warning("could not remove stale sandbox workspace %s: %s", path, exc)
    return removed


@dataclass
class Workspace:
    """A work directory for boxes; ``bounded`` when it is its own tmpfs of ``size_kib`` and ``inodes``."""

    path: Path
    bounded: bool
    size_kib: int
    inodes: int
    closed: bool = False

    def close(self) -> None:
        """Remove the workspace and everything boxes left in it."""
        if self.closed:
            return
        self.closed = True
        if self.bounded:
            _unmount(self.path)
            os.rmdir(self.path)
        else:
            from conveyor_sandbox.cleanup import remove_tree

            remove_tree(self.path)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_workspace(*, size_kib: int = DEFAULT_SIZE_KIB, inodes: int = DEFAULT_INODES,
                   root: Path | None = None) -> Workspace:
    """A new empty workspace: a bounded tmpfs when running as root, else a plain temporary directory."""
    if size_kib <= 0 or inodes <= 0:
        raise ValueError(f"a workspace needs a positive size and inode count, got {size_kib} KiB, {inodes} inodes")
    if os.geteuid() != 0:
        path = Path(tempfile.mkdtemp(prefix="conveyor-ws-"))
        return Workspace(path, False, size_kib, inodes)
    root = root or workspace_root()
    with _lock:
        if str(root) not in _swept:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(root, 0o700)
            sweep(root)
            _swept.add(str(root))
    path = root / f"ws-{os.getpid()}-{next(_counter)}"
    path.mkdir(mode=0o700)
    try:
        _mount_tmpfs(path, size_kib, inodes)
    except OSError:
        os.rmdir(path)
        raise
    return Workspace(path, True, size_kib, inodes)


def is_bounded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies on a tmpfs (a workspace, or another bounded one)."""
    return _fs_type(path) == TMPFS_MAGIC


def used_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes in use on the file system holding ``path`` (0 when it cannot be asked)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _fs_type(path: str | os.PathLike[str]) -> int:
    class StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    buf = StatFs()
    if _libc().statfs(os.fsencode(os.fspath(path)), ctypes.byref(buf)) != 0:
        return 0
    return int(buf.f_type)
