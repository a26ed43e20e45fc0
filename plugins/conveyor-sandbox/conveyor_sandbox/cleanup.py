"""Remove a directory tree a box wrote: iterative, descriptor-based, never following a link out of it.

``shutil.rmtree`` recurses once per level (a 3,000-deep tree raises ``RecursionError``),
and a box can leave directories of mode 000 owned by its uid. ``remove_tree`` walks with an
explicit stack of directory descriptors opened with ``O_NOFOLLOW``, keeps at most
``MAX_OPEN_FDS`` of them open (deeper ancestors are reopened through ``..`` and checked by
device and inode), gives every directory ``u+rwx`` before reading it, unlinks symbolic
links instead of following them, and raises ``CleanupError`` only for a real I/O failure.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

#: directory descriptors kept open at once; ancestors beyond are reopened through ".."
MAX_OPEN_FDS = 32
#: how often a directory that is not empty after its entries were removed is read again
MAX_RESCANS = 3

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GONE = (errno.ENOENT,)
_NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)


class CleanupError(OSError):
    """A tree could not be removed completely (the first failure's errno, how many entries failed)."""

    def __init__(self, err: int, message: str, path: str, failures: int = 1) -> None:
        super().__init__(err, message, path)
        self.failures = failures


@dataclass
class _Frame:
    """One directory on the walk: how its parent names it, its descriptor and identity, what is left."""

    name: str
    fd: int
    dev: int
    ino: int
    rel: str
    pending: list[str] | None = None
    skip: set[str] = field(default_factory=set)
    retried: dict[str, int] = field(default_factory=dict)
    failed: bool = False


@dataclass
class _Walk:
    """The state of one removal: the stack, the count of removed entries and the first failure."""

    root: str
    frames: list[_Frame] = field(default_factory=list)
    low: int = 0  # the open descriptors are those of frames[low:]
    removed: int = 0
    failures: int = 0
    first: tuple[int, str, str] | None = None

    def fail(self, exc: OSError, rel: str, what: str) -> None:
        """Record a failure; the walk goes on with the other entries."""
        self.failures += 1
        if self.first is None:
            self.first = (exc.errno or errno.EIO, f"cannot {what}: {exc.strerror or exc}", rel)


def _grant_owner_rwx(fd: int) -> None:
    """Give a directory u+rwx so its entries can be read and removed (root, or its owner)."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o700 != 0o700:
        os.fchmod(fd, mode | 0o700)


def _chmod_by_path_fd(parent: int, name: str) -> None:
    """Set u+rwx on a directory that cannot be opened for reading, through an O_PATH descriptor."""
    pfd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        mode = stat.S_IMODE(os.fstat(pfd).st_mode)
        # the descriptor pins this very directory: the /proc link cannot be swapped for another path
        os.chmod(f"/proc/self/fd/{pfd}", mode | 0o700)
    finally:
        os.close(pfd)


def _open_dir(parent: int, name: str) -> int:
    """Open a subdirectory without following links, making it readable first if it is not."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        _chmod_by_path_fd(parent, name)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        _grant_owner_rwx(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def _scan(walk: _Walk, frame: _Frame) -> list[str]:
    """Unlink every non-directory entry of a directory; return its subdirectories (last one first)."""
    os.lseek(frame.fd, 0, os.SEEK_SET)
    subdirs: list[str] = []
    with os.scandir(frame.fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if name in frame.skip:
            continue
        if is_dir:
            subdirs.append(name)
            continue
        try:
            os.unlink(name, dir_fd=frame.fd)
            walk.removed += 1
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            subdirs.append(name)  # replaced by a directory since it was listed
        except OSError as exc:
            walk.fail(exc, f"{frame.rel}/{name}", "remove")
            frame.skip.add(name)
            frame.failed = True
    subdirs.reverse()
    return subdirs


def _descend(walk: _Walk, frame: _Frame, name: str) -> None:
    """Push the subdirectory ``name`` of ``frame``, or unlink it if it turned out not to be one."""
    rel = f"{frame.rel}/{name}"
    try:
        fd = _open_dir(frame.fd, name)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in _NOT_A_DIR:
            try:
                os.unlink(name, dir_fd=frame.fd)
                walk.removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc2:
                walk.fail(exc2, rel, "remove")
                frame.skip.add(name)
                frame.failed = True
            return
        walk.fail(exc, rel, "open directory")
        frame.skip.add(name)
        frame.failed = True
        return
    st = os.fstat(fd)
    walk.frames.append(_Frame(name, fd, st.st_dev, st.st_ino, rel))
    if len(walk.frames) - walk.low > MAX_OPEN_FDS:
        # the shallowest open ancestor is closed; it is reopened through ".." on the way back
        shallow = walk.frames[walk.low]
        os.close(shallow.fd)
        shallow.fd = -1
        walk.low += 1


def _reopen_parent(walk: _Walk, child: _Frame, parent: _Frame) -> None:
    """Reopen a closed ancestor through ``..`` and check it is still the same directory."""
    fd = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
        os.close(fd)
        raise CleanupError(errno.ESTALE, "the tree was moved while it was being removed; stopped",
                           os.path.join(walk.root, parent.rel.lstrip("/")))
    parent.fd = fd
    walk.low = len(walk.frames) - 1


def _ascend(walk: _Walk) -> None:
    """The top directory is done: remove it from its parent (or read it again if it is not empty)."""
    child = walk.frames.pop()
    parent = walk.frames[-1]
    if parent.fd < 0:
        try:
            _reopen_parent(walk, child, parent)
        except BaseException:
            os.close(child.fd)
            raise
    os.close(child.fd)
    child.fd = -1
    if child.failed:
        parent.failed = True
        parent.skip.add(child.name)
        return
    try:
        os.rmdir(child.name, dir_fd=parent.fd)
        walk.removed += 1
    except FileNotFoundError:
        pass
    except OSError as exc:
        tries = parent.retried.get(child.name, 0)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and tries < MAX_RESCANS:
            # something appeared meanwhile: walk it again
            parent.retried[child.name] = tries + 1
            parent.pending = [*(parent.pending or []), child.name]
            return
        walk.fail(exc, child.rel, "remove directory")
        parent.skip.add(child.name)
        parent.failed = True


def _walk(walk: _Walk) -> None:
    """Empty the root frame's directory, depth first, without recursion."""
    while True:
        frame = walk.frames[-1]
        if frame.pending is None:
            frame.pending = _scan(walk, frame)
        if frame.pending:
            _descend(walk, frame, frame.pending.pop())
            continue
        if len(walk.frames) == 1:
            return
        _ascend(walk)


def remove_tree(path: str | os.PathLike[str]) -> int:
    """Remove ``path`` and everything under it without following links; the number of entries removed.

    A missing ``path`` removes nothing; a symbolic link at ``path`` is removed itself. Raises
    ``CleanupError`` (an ``OSError``) when something could not be removed; everything else that
    could be is gone by then.
    """
    full = os.path.abspath(os.fspath(path))
    head, name = os.path.split(full)
    if not name or full == "/":
        raise CleanupError(errno.EINVAL, "refusing to remove the root directory", full)
    try:
        pfd = os.open(head, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise CleanupError(exc.errno or errno.EIO, f"cannot open {head}: {exc.strerror}", full) from None
    walk = _Walk(full)
    try:
        try:
            fd = _open_dir(pfd, name)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            if exc.errno not in _NOT_A_DIR:
                raise CleanupError(exc.errno or errno.EIO, f"cannot open {full}: {exc.strerror}", full) from None
            try:
                os.unlink(name, dir_fd=pfd)
            except FileNotFoundError:
                return 0
            except OSError as exc2:
                raise CleanupError(exc2.errno or errno.EIO, f"cannot remove {full}: {exc2.strerror}",
                                   full) from None
            return 1
        st = os.fstat(fd)
        walk.frames.append(_Frame(name, fd, st.st_dev, st.st_ino, ""))
        try:
            _walk_until_empty(walk)
        except CleanupError:
            raise
        except OSError as exc:
            raise CleanupError(exc.errno or errno.EIO, f"cannot remove {full}: {exc.strerror or exc}", full,
                               walk.failures + 1) from None
        finally:
            for f in walk.frames:
                if f.fd >= 0:
                    os.close(f.fd)
                    f.fd = -1
        if walk.first is None:
            try:
                os.rmdir(name, dir_fd=pfd)
                walk.removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                walk.fail(exc, "", "remove directory")
    finally:
        os.close(pfd)
    if walk.first is not None:
        err, message, rel = walk.first
        where = os.path.join(full, rel.lstrip("/")) if rel else full
        extra = f" ({walk.failures} entries could not be removed)" if walk.failures > 1 else ""
        raise CleanupError(err, f"{message}{extra}", where, walk.failures)
    return walk.removed


def _walk_until_empty(walk: _Walk) -> None:
    """Walk the root until it is empty, reading it again a few times if entries keep appearing."""
    root = walk.frames[0]
    for _ in range(MAX_RESCANS + 1):
        root.pending = None
        _walk(walk)
        if root.failed:
            return
        os.lseek(root.fd, 0, os.SEEK_SET)
        with os.scandir(root.fd) as it:
            if not any(e.name not in root.skip for e in it):
                return
