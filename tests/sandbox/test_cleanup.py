"""remove_tree: deep, wide, linked and locked trees a box leaves behind, removed without recursion or escape."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor_sandbox.cleanup import MAX_OPEN_FDS, CleanupError, remove_tree

#: an unprivileged uid outside the sandbox's box range, for the tests that must not run as root
OTHER_UID = 65534


def deep_tree(root: Path, depth: int, every: int = 0, make: Callable[[int, int], None] | None = None) -> None:
    """``root/d/d/…`` ``depth`` levels deep, built with descriptors (no path is ever that long)."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            if make is not None and every and level % every == 0:
                make(fd, level)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)


def in_child(fn: Callable[[], None], uid: int | None = None, nofile: int | None = None) -> tuple[int, str]:
    """Run ``fn`` in a forked child (as ``uid``, with at most ``nofile`` descriptors); its exit code and error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            if nofile is not None:
                # only the report pipe stays open, as descriptor 3, then the limit drops
                os.dup2(w, 3)
                w = 3
                os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            fn()
        except BaseException:
            code = 1
            try:
                os.write(w, traceback.format_exc().encode()[-4000:])
            except OSError:
                pass
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory every uid can reach (the tests that drop root work in it), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="conveyor-cleanup-test-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    remove_tree(d)


def test_a_10000_deep_tree_goes_without_recursion_and_within_few_descriptors(base):
    tree = base / "tree"
    deep_tree(tree, 10_000)
    with pytest.raises(RecursionError):  # what the judge used to call, for the record
        shutil.rmtree(tree)
    # the descriptor budget holds: a child limited to a few dozen descriptors removes it all
    code, err = in_child(lambda: remove_tree(tree), nofile=MAX_OPEN_FDS + 16)
    assert code == 0, err
    assert not tree.exists() and sys.getrecursionlimit() < 10_000


def test_a_3000_deep_tree_returns_the_number_of_entries_removed(base):
    tree = base / "tree"

    def files(fd: int, level: int) -> None:
        os.close(os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))

    deep_tree(tree, 3000, every=100, make=files)
    assert remove_tree(tree) == 3000 + 30 + 1
    assert not tree.exists()


def test_a_wide_tree_goes(base):
    tree = base / "wide"
    tree.mkdir()
    for i in range(3000):
        (tree / f"f{i}").write_bytes(b"x")
    for i in range(300):
        sub = tree / f"d{i}"
        sub.mkdir()
        for j in range(10):
            (sub / f"g{j}").write_bytes(b"y")
    assert remove_tree(tree) == 3000 + 300 * 11 + 1
    assert not tree.exists()


def test_links_out_of_the_tree_are_removed_never_followed(base):
    outside = base / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep")
    (outside / "sub" / "also.txt").write_text("also")
    tree = base / "tree"
    deep_tree(tree, 50)
    inner = tree / "d" / "d"
    (inner / "to_dir").symlink_to(outside)
    (inner / "to_file").symlink_to(outside / "keep.txt")
    (inner / "to_parent").symlink_to("../../..")
    (inner / "dangling").symlink_to("/nonexistent/nothing")
    os.link(outside / "keep.txt", inner / "hardlink")
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "keep" and (outside / "sub" / "also.txt").read_text() == "also"
    assert os.stat(outside / "keep.txt").st_nlink == 1
    # a link given as the tree itself is removed, not what it points to
    link = base / "link"
    link.symlink_to(outside)
    assert remove_tree(link) == 1
    assert not os.path.lexists(link) and (outside / "keep.txt").exists()


def test_mode_000_directories_and_files_of_a_box_uid_go_for_root(base):
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests run as root")
    tree = base / "tree"
    tree.mkdir()
    cur = tree
    for i in range(20):
        cur = cur / f"l{i}"
        cur.mkdir()
        (cur / "secret").write_text("x")
        os.chmod(cur / "secret", 0)
    for p in [tree, *tree.rglob("*")]:
        os.lchown(p, 60999, 60999)
    for p in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
        if p.is_dir():
            os.chmod(p, 0)
    remove_tree(tree)
    assert not tree.exists()


def test_an_owner_without_root_opens_its_own_mode_000_directories(base):
    mine = base / "mine"
    mine.mkdir()
    os.chown(mine, OTHER_UID, OTHER_UID)

    def build_and_remove() -> None:
        tree = mine / "tree"
        deep_tree(tree, 200)
        cur = tree
        for _ in range(200):
            (cur / "f").write_text("x")
            cur = cur / "d"
        # every level unreadable and unwritable, deepest first, then the top itself
        levels = [tree / "/".join(["d"] * i) if i else tree for i in range(201)]
        for p in reversed(levels):
            os.chmod(p, 0)
        remove_tree(tree)
        assert not os.path.lexists(tree)

    code, err = in_child(build_and_remove, uid=OTHER_UID)
    assert code == 0, err


def test_what_cannot_be_removed_is_a_typed_error_after_the_rest_is_gone(base):
    tree = base / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "rootfile").write_text("x")
    os.chmod(tree / "locked", 0o755)  # root's folder: the other uid may not remove its entries
    for i in range(5):
        (tree / f"free{i}").mkdir()
        (tree / f"free{i}" / "f").write_text("x")
    for p in [tree, *(tree / f"free{i}" for i in range(5)), *(tree / f"free{i}" / "f" for i in range(5))]:
        os.lchown(p, OTHER_UID, OTHER_UID)

    def remove() -> None:
        with pytest.raises(CleanupError) as exc:
            remove_tree(tree)
        assert exc.value.errno in (errno.EACCES, errno.EPERM)
        assert "locked" in str(exc.value.filename) and exc.value.failures >= 1
        assert sorted(os.listdir(tree)) == ["locked"]

    code, err = in_child(remove, uid=OTHER_UID)
    assert code == 0, err
    assert (tree / "locked" / "rootfile").exists()
    remove_tree(tree)
    assert not tree.exists()


def test_missing_paths_files_and_the_root_itself(base):
    assert remove_tree(base / "nothing") == 0
    (base / "file").write_text("x")
    os.chmod(base / "file", 0)
    assert remove_tree(base / "file") == 1 and not (base / "file").exists()
    with pytest.raises(CleanupError):
        remove_tree("/")


def test_special_files_are_unlinked(base):
    tree = base / "tree"
    tree.mkdir()
    os.mkfifo(tree / "fifo")
    import socket
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tree / "sock"))
    finally:
        s.close()
    assert stat.S_ISSOCK(os.lstat(tree / "sock").st_mode)
    assert remove_tree(tree) == 3 and not tree.exists()
