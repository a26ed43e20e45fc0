"""Safe unpacking of problem packages: every bound is checked on the central directory before a byte is written."""

from __future__ import annotations

import io
import itertools
import lzma
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from conveyor_judge.errors import JudgeError

DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_UNPACKED_MB = 256
DEFAULT_MAX_DIRS = 1_000
DEFAULT_MAX_DEPTH = 32
#: deflate cannot expand more than 1032:1; only bzip2/LZMA members or forged headers go past this
DEFAULT_MAX_RATIO = 1_100
#: members smaller than this are never refused for their ratio (tiny files compress oddly)
RATIO_FLOOR_BYTES = 1 << 20
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 1024
#: extra bytes a zip may hold beyond what it unpacks to (headers, central directory)
ZIP_OVERHEAD_BYTES = 64 << 20


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise JudgeError("invalid_payload", f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise JudgeError("invalid_payload", f"{name}={raw!r} must be a positive integer")
    return value


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on what one package may unpack to (``CONVEYOR_JUDGE_MAX_*``)."""

    max_files: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_FILES", DEFAULT_MAX_FILES))
    max_bytes: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_UNPACKED_MB",
                                                            DEFAULT_MAX_UNPACKED_MB) << 20)
    max_dirs: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_DIRS", DEFAULT_MAX_DIRS))
    max_depth: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_DEPTH", DEFAULT_MAX_DEPTH))
    max_ratio: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_RATIO", DEFAULT_MAX_RATIO))


def _unsafe(label: str, message: str) -> JudgeError:
    return JudgeError("unsafe_problem_package", f"{label}: {message}")


def _invalid(label: str, message: str) -> JudgeError:
    return JudgeError("invalid_problem_package", f"{label}: {message}")


def _too_large(label: str, message: str) -> JudgeError:
    return JudgeError("problem_package_too_large", f"{label}: {message}")


def _show(name: str, limit: int = 80) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "…")


def check_path(name: str, label: str, lim: UnpackLimits) -> list[str]:
    """The components of a member path, or the refusal naming what is wrong with it."""
    if "\0" in name:
        raise _unsafe(label, "a member name contains a NUL byte; rebuild the zip from plain files")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _unsafe(label, f"member {_show(name)} has an absolute path; packages hold relative paths only")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(label, f"member {_show(name)} climbs out of the package with '..'")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
            raise _invalid(label, f"member {_show(name)} has a name component longer than {NAME_MAX_BYTES} bytes; "
                                  "shorten it")
    if len(parts) > lim.max_depth:
        raise _invalid(label, f"member {_show(name)} is {len(parts)} levels deep, more than {lim.max_depth} "
                              "(CONVEYOR_JUDGE_MAX_DEPTH); flatten the package")
    if len("/".join(parts).encode("utf-8", "surrogateescape")) > PATH_MAX_BYTES:
        raise _invalid(label, f"member {_show(name)} has a path longer than {PATH_MAX_BYTES} bytes; shorten it")
    return parts


def _check_kind(info: zipfile.ZipInfo, label: str) -> None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _unsafe(label, f"member {_show(info.filename)} is a symbolic link; store the file itself instead")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(label, f"member {_show(info.filename)} is not a regular file or directory")
    if info.flag_bits & 0x1:
        raise _invalid(label, f"member {_show(info.filename)} is encrypted; store it unencrypted")


@dataclass(frozen=True)
class Plan:
    """What a package unpacks to: directories (parents first) and files, all checked."""

    dirs: tuple[str, ...]
    files: tuple[tuple[str, zipfile.ZipInfo], ...]


def _entry_count(data: bytes) -> int | None:
    """The entry count the end-of-central-directory record claims, read without building the listing."""
    try:
        rec = zipfile._EndRecData(io.BytesIO(data))  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None
    return int(rec[zipfile._ECD_ENTRIES_TOTAL]) if rec else None  # type: ignore[attr-defined]


def _check_overlap(infos: list[zipfile.ZipInfo], label: str) -> None:
    """Refuse members whose compressed data overlap (the non-recursive zip bomb)."""
    spans = sorted((i.header_offset, i.header_offset + 30 + i.compress_size, i.filename) for i in infos)
    for (_, end, name), (nstart, _, nname) in itertools.pairwise(spans):
        if nstart < end:
            raise _too_large(label, f"members {_show(name)} and {_show(nname)} share compressed data "
                                    "(an overlapping zip bomb); rebuild the zip with a standard tool")


def plan(zf: zipfile.ZipFile, label: str, lim: UnpackLimits) -> Plan:
    """Check every member against the bounds and return what to create; nothing is written."""
    infos = zf.infolist()
    if len(infos) > lim.max_files:
        raise _too_large(label, f"{len(infos)} entries, more than the limit of {lim.max_files} "
                                "(CONVEYOR_JUDGE_MAX_FILES)")
    files: dict[str, zipfile.ZipInfo] = {}
    explicit_dirs: set[str] = set()
    for info in infos:
        parts = check_path(info.filename, label, lim)
        _check_kind(info, label)
        if not parts:
            continue
        key = "/".join(parts)
        if info.is_dir():
            explicit_dirs.add(key)
        elif key in files:
            raise _invalid(label, f"member {_show(key)} appears twice; keep one")
        else:
            files[key] = info
    dirs: set[str] = set(explicit_dirs)
    for key in files:
        parent = key.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            if len(dirs) > lim.max_dirs:
                break
            parent = parent.rpartition("/")[0]
        if len(dirs) > lim.max_dirs:
            raise _too_large(label, f"more than {lim.max_dirs} folders (CONVEYOR_JUDGE_MAX_DIRS); keep tests in "
                                    "a few folders")
    clash = next((k for k in files if k in dirs), None)
    if clash is not None:
        raise _invalid(label, f"{_show(clash)} is both a file and a folder; rename one of them")
    declared = sum(i.file_size for i in files.values())
    if declared > lim.max_bytes:
        raise _too_large(label, f"unpacks to {declared} bytes, more than the limit of {lim.max_bytes} "
                                "(CONVEYOR_JUDGE_MAX_UNPACKED_MB)")
    for key, info in files.items():
        _check_ratio(info.file_size, info, key, label, lim)
    _check_overlap(list(files.values()), label)
    ordered = tuple(sorted(dirs, key=lambda d: (d.count("/"), d)))
    return Plan(ordered, tuple(files.items()))


def _check_ratio(size: int, info: zipfile.ZipInfo, key: str, label: str, lim: UnpackLimits) -> None:
    if size > RATIO_FLOOR_BYTES and size > lim.max_ratio * max(info.compress_size, 1):
        raise _too_large(label, f"member {_show(key)} expands {size // max(info.compress_size, 1)}:1, more than "
                                f"{lim.max_ratio}:1 (CONVEYOR_JUDGE_MAX_RATIO): a zip bomb, or store it deflated")


def open_zip(data: bytes, label: str, lim: UnpackLimits) -> zipfile.ZipFile:
    """The archive, or the refusal saying why it cannot be read or is too big to list."""
    if len(data) > lim.max_bytes + ZIP_OVERHEAD_BYTES:
        raise _too_large(label, f"the zip is {len(data)} bytes, more than the unpacked limit of {lim.max_bytes} "
                                "(CONVEYOR_JUDGE_MAX_UNPACKED_MB)")
    count = _entry_count(data)
    if count is not None and count > lim.max_files:
        raise _too_large(label, f"{count} entries, more than the limit of {lim.max_files} (CONVEYOR_JUDGE_MAX_FILES)")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # a hostile archive may break the parser in any way
        raise JudgeError("invalid_problem_package", f"{label} is not a readable zip archive ({exc})") from None


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, OSError, ValueError,
                RuntimeError)


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, target: Path, label: str, lim: UnpackLimits,
             total: int) -> int:
    """Write one member (mode 0600), counting the bytes that really come out; returns the new total."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out:
        try:
            src = zf.open(info)
        except _READ_ERRORS as exc:
            raise _invalid(label, f"member {_show(key)} cannot be read ({exc})") from None
        with src:
            while True:
                try:
                    chunk = src.read(1 << 20)
                except _READ_ERRORS as exc:
                    raise _invalid(label, f"member {_show(key)} cannot be read ({exc})") from None
                if not chunk:
                    break
                written += len(chunk)
                total += len(chunk)
                # the declared sizes may lie: count what really comes out
                if total > lim.max_bytes:
                    raise _too_large(label, f"unpacks to more than {lim.max_bytes} bytes "
                                            "(CONVEYOR_JUDGE_MAX_UNPACKED_MB)")
                _check_ratio(written, info, key, label, lim)
                out.write(chunk)
    return total


def safe_unpack(data: bytes, dest: Path, limits: UnpackLimits | None = None, label: str = "package") -> None:
    """Unpack a zip into ``dest`` (created 0700, files 0600), refusing escapes, links, clashes, bombs and excess."""
    lim = limits or UnpackLimits()
    zf = open_zip(data, label, lim)
    with zf:
        todo = plan(zf, label, lim)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(dest, 0o700)
        for d in todo.dirs:
            (dest / d).mkdir(mode=0o700)
        total = 0
        for key, info in todo.files:
            total = _extract(zf, info, key, dest / key, label, lim, total)


def _walk_regular(root: Path, lim: UnpackLimits) -> list[Path]:
    """Every regular file under ``root`` (no recursion), refusing links, special files and excess."""
    found: list[Path] = []
    dirs = 0
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            full = Path(e.path)
            check_path(full.relative_to(root).as_posix(), str(root), lim)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise JudgeError("unsafe_problem_package",
                                 f"{full} is a symbolic link; copy the file into the problem instead")
            if stat.S_ISDIR(st.st_mode):
                dirs += 1
                if dirs > lim.max_dirs:
                    raise _too_large(str(root), f"more than {lim.max_dirs} folders (CONVEYOR_JUDGE_MAX_DIRS)")
                stack.append((full, depth + 1))
            elif stat.S_ISREG(st.st_mode):
                found.append(full)
                if len(found) > lim.max_files:
                    raise _too_large(str(root), f"more than {lim.max_files} files (CONVEYOR_JUDGE_MAX_FILES)")
            else:
                raise JudgeError("unsafe_problem_package",
                                 f"{full} is not a regular file (a pipe, socket or device); remove it")
    return sorted(found)


def zip_directory(path: Path, limits: UnpackLimits | None = None) -> bytes:
    """Zip a problem directory (for `problem add DIR`), refusing links, special files and oversize trees."""
    lim = limits or UnpackLimits()
    if not path.is_dir():
        raise JudgeError("invalid_problem_package", f"{path} is not a directory")
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for full in _walk_regular(path, lim):
            total += full.stat().st_size
            if total > lim.max_bytes:
                raise _too_large(str(path), f"holds more than {lim.max_bytes} bytes (CONVEYOR_JUDGE_MAX_UNPACKED_MB)")
            zf.write(full, full.relative_to(path).as_posix())
    return buf.getvalue()
