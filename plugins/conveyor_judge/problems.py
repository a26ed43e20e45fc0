"""Problem packages: safe unpacking, the plain and Kattis layouts, and the store behind problem ids."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tomllib
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError
from conveyor.storage import Storage
from conveyor_judge.errors import JudgeError

DEFAULT_TIME_LIMIT_MS = 1000
DEFAULT_MEMORY_LIMIT_MIB = 256
DEFAULT_OUTPUT_LIMIT_KIB = 16 * 1024
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_UNPACKED_MB = 256

#: problem.toml keys and their types
TOML_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "time_limit_ms": (int,), "memory_limit_mib": (int,), "output_limit_kib": (int,),
    "checker": (str,), "checker_source": (str,), "float_abs_tol": (int, float), "float_rel_tol": (int, float),
    "interactor_source": (str,), "interactor_protocol": (str,), "run_all_tests": (bool,), "points": (int, float),
}
PROGRAM_CHECKERS = ("testlib", "kattis")
SOURCE_SUFFIXES = (".c", ".cpp", ".cc", ".cxx", ".py")


def cache_root() -> Path:
    """Where unpacked problems and work directories live (``CONVEYOR_JUDGE_CACHE``)."""
    root = Path(os.environ.get("CONVEYOR_JUDGE_CACHE") or "/var/tmp/conveyor-judge")
    # 0711: sandbox uids may pass through to their own work directory but list nothing
    try:
        for sub, mode in (("", 0o711), ("problems", 0o700), ("runs", 0o711)):
            d = root / sub if sub else root
            d.mkdir(parents=True, exist_ok=True)
            if stat.S_IMODE(d.stat().st_mode) != mode:
                os.chmod(d, mode)
    except OSError as exc:
        raise ConfigError(f"judge cache {root} is not usable ({exc.strerror}); set CONVEYOR_JUDGE_CACHE to a "
                          "directory this user owns, outside /tmp") from None
    return root


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise JudgeError("invalid_payload", f"{name}={raw!r} is not an integer") from None
    return value


@dataclass(frozen=True)
class TestCase:
    """One test: its name, input file and expected answer (None for some interactive tests)."""

    __test__ = False  # not a pytest class
    name: str
    input: Path
    answer: Path | None
    points: float = 1.0


@dataclass(frozen=True)
class Problem:
    """An unpacked problem package, ready to judge."""

    id: str
    root: Path
    format: str  # "plain" | "kattis"
    tests: tuple[TestCase, ...]
    time_limit_ms: int = DEFAULT_TIME_LIMIT_MS
    memory_limit_mib: int = DEFAULT_MEMORY_LIMIT_MIB
    output_limit_kib: int = DEFAULT_OUTPUT_LIMIT_KIB
    checker: str = "standard"
    checker_source: Path | None = None
    float_abs_tol: float = 1e-6
    float_rel_tol: float = 1e-6
    interactor_source: Path | None = None
    interactor_protocol: str = "testlib"
    run_all_tests: bool = False
    name: str = ""

    @property
    def interactive(self) -> bool:
        """Whether submissions talk to an interactor instead of reading a file."""
        return self.interactor_source is not None

    @property
    def max_score(self) -> float:
        """Sum of every test's points."""
        return float(sum(t.points for t in self.tests))


# ---------------------------------------------------------------- safe unpacking

@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on what one package may unpack to."""

    max_files: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_FILES", DEFAULT_MAX_FILES))
    max_bytes: int = field(default_factory=lambda: _env_int("CONVEYOR_JUDGE_MAX_UNPACKED_MB",
                                                            DEFAULT_MAX_UNPACKED_MB) << 20)


def _check_member(info: zipfile.ZipInfo, label: str) -> list[str]:
    name = info.filename
    if "\0" in name:
        raise JudgeError("unsafe_problem_package", f"{label}: a member name contains a NUL byte")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise JudgeError("unsafe_problem_package",
                         f"{label}: member {name!r} has an absolute path; packages hold relative paths only")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise JudgeError("unsafe_problem_package",
                         f"{label}: member {name!r} climbs out of the package with '..'")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise JudgeError("unsafe_problem_package",
                         f"{label}: member {name!r} is a symbolic link; store the file itself instead")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise JudgeError("unsafe_problem_package", f"{label}: member {name!r} is not a regular file or directory")
    if info.flag_bits & 0x1:
        raise JudgeError("invalid_problem_package", f"{label}: member {name!r} is encrypted")
    return parts


def safe_unpack(data: bytes, dest: Path, limits: UnpackLimits | None = None, label: str = "package") -> None:
    """Unpack a zip into the empty directory ``dest``, refusing escapes, links and bombs."""
    lim = limits or UnpackLimits()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise JudgeError("invalid_problem_package", f"{label} is not a readable zip archive ({exc})") from None
    files = [i for i in infos if not i.is_dir()]
    if len(infos) > lim.max_files:
        raise JudgeError("problem_package_too_large",
                         f"{label} has {len(infos)} entries, more than the limit of {lim.max_files}")
    declared = sum(i.file_size for i in files)
    if declared > lim.max_bytes:
        raise JudgeError("problem_package_too_large",
                         f"{label} unpacks to {declared} bytes, more than the limit of {lim.max_bytes} "
                         "(CONVEYOR_JUDGE_MAX_UNPACKED_MB)")
    checked = [(_check_member(i, label), i) for i in infos]
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    seen: set[str] = set()
    for parts, info in checked:
        if not parts:
            continue
        key = "/".join(parts)
        target = dest.joinpath(*parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if key in seen:
            raise JudgeError("invalid_problem_package", f"{label}: member {key!r} appears twice")
        seen.add(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                fd = -1
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
                    # the declared sizes may lie: count what really comes out
                    if total > lim.max_bytes:
                        raise JudgeError("problem_package_too_large",
                                         f"{label} unpacks to more than {lim.max_bytes} bytes "
                                         "(CONVEYOR_JUDGE_MAX_UNPACKED_MB)")
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise JudgeError("invalid_problem_package", f"{label}: member {key!r} cannot be read ({exc})") from None
        finally:
            if fd >= 0:
                os.close(fd)


def zip_directory(path: Path, limits: UnpackLimits | None = None) -> bytes:
    """Zip a problem directory (for `problem add DIR`), refusing links and oversize trees."""
    lim = limits or UnpackLimits()
    if not path.is_dir():
        raise JudgeError("invalid_problem_package", f"{path} is not a directory")
    buf = io.BytesIO()
    count = total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(dirpath) / name
                if full.is_symlink():
                    raise JudgeError("unsafe_problem_package",
                                     f"{full} is a symbolic link; copy the file into the problem instead")
            for name in sorted(filenames):
                full = Path(dirpath) / name
                count += 1
                total += full.stat().st_size
                if count > lim.max_files or total > lim.max_bytes:
                    raise JudgeError("problem_package_too_large",
                                     f"{path} holds more than {lim.max_files} files or {lim.max_bytes} bytes")
                zf.write(full, full.relative_to(path).as_posix())
    return buf.getvalue()


# ---------------------------------------------------------------- layouts

def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _content_root(root: Path) -> Path:
    """Descend through a single wrapping folder (``problem/1.in`` zipped with its folder)."""
    cur = root
    while True:
        entries = [e for e in cur.iterdir() if e.name not in ("__MACOSX", ".DS_Store")]
        if len(entries) == 1 and entries[0].is_dir():
            cur = entries[0]
            continue
        return cur


def _pair_tests(base: Path, under: Path, label: str, need_answer: bool) -> list[TestCase]:
    tests = []
    inputs = sorted((p for p in under.rglob("*.in") if p.is_file()),
                    key=lambda p: _natural(p.relative_to(base).as_posix()))
    for inp in inputs:
        ans = next((c for c in (inp.with_suffix(".out"), inp.with_suffix(".ans")) if c.is_file()), None)
        rel = inp.relative_to(base).as_posix()
        if ans is None and need_answer:
            raise JudgeError("invalid_problem_package",
                             f"{label}: test input {rel} has no expected output {inp.stem}.out or {inp.stem}.ans "
                             "next to it")
        tests.append(TestCase(rel[:-3], inp, ans))
    return tests


def _find_source(d: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suf in SOURCE_SUFFIXES:
            p = d / f"{stem}{suf}"
            if p.is_file():
                return p
    return None


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JudgeError("invalid_problem_package", f"{label}: problem.toml is not valid TOML ({exc})") from None
    for key, value in data.items():
        if key not in TOML_KEYS:
            raise JudgeError("invalid_problem_package",
                             f"{label}: problem.toml has unknown key {key!r}; known keys: {', '.join(TOML_KEYS)}")
        if (isinstance(value, bool) and bool not in TOML_KEYS[key]) or not isinstance(value, TOML_KEYS[key]):
            raise JudgeError("invalid_problem_package",
                             f"{label}: problem.toml {key} = {value!r} should be a "
                             f"{' or '.join(t.__name__ for t in TOML_KEYS[key])}")
    for key in ("time_limit_ms", "memory_limit_mib", "output_limit_kib", "points"):
        if key in data and data[key] <= 0:
            raise JudgeError("invalid_problem_package", f"{label}: problem.toml {key} must be positive")
    return data


def _inside(root: Path, rel: str, label: str, what: str) -> Path:
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()) or not p.is_file():
        raise JudgeError("invalid_problem_package", f"{label}: {what} {rel!r} is not a file in the package")
    return p


def parse_simple_yaml(text: str) -> dict[str, Any]:
    """The subset of YAML problem.yaml files use: nested maps of scalars (PyYAML is used when installed)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        yaml = None
    if yaml is not None:
        loaded = yaml.safe_load(text)
        return loaded if isinstance(loaded, dict) else {}
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        cur = stack[-1][1]
        value = value.strip().strip("'\"")
        if not value:
            child: dict[str, Any] = {}
            cur[key] = child
            stack.append((indent, child))
            continue
        num: Any = value
        try:
            num = int(value)
        except ValueError:
            try:
                num = float(value)
            except ValueError:
                pass
        cur[key] = num
    return root


def _load_kattis(pid: str, root: Path, label: str) -> Problem:
    meta: dict[str, Any] = {}
    if (root / "problem.yaml").is_file():
        try:
            meta = parse_simple_yaml((root / "problem.yaml").read_text(encoding="utf-8"))
        except Exception as exc:
            raise JudgeError("invalid_problem_package", f"{label}: problem.yaml cannot be read ({exc})") from None
    validation = str(meta.get("validation", "default"))
    ptype = str(meta.get("type", ""))
    interactive = "interactive" in validation or "interactive" in ptype
    custom = interactive or "custom" in validation
    kw: dict[str, Any] = {"name": str(meta.get("name", "")) if not isinstance(meta.get("name"), dict) else ""}
    raw_limits = meta.get("limits")
    limits: dict[str, Any] = raw_limits if isinstance(raw_limits, dict) else {}
    if isinstance(limits.get("memory"), int):
        kw["memory_limit_mib"] = limits["memory"]
    if isinstance(limits.get("time_limit"), (int, float)):
        kw["time_limit_ms"] = int(limits["time_limit"] * 1000)
    tl_file = root / ".timelimit"
    if tl_file.is_file():
        try:
            kw["time_limit_ms"] = int(float(tl_file.read_text().split()[0]) * 1000)
        except (ValueError, IndexError):
            raise JudgeError("invalid_problem_package", f"{label}: .timelimit must hold seconds") from None
    flags = str(meta.get("validator_flags", "")).split()
    for i, flag in enumerate(flags[:-1]):
        if flag in ("float_tolerance", "float_absolute_tolerance", "float_relative_tolerance"):
            kw["checker"] = "floats"
            tol = float(flags[i + 1])
            if flag != "float_relative_tolerance":
                kw["float_abs_tol"] = tol
            if flag != "float_absolute_tolerance":
                kw["float_rel_tol"] = tol
    data = root / "data"
    tests: list[TestCase] = []
    for group in ("sample", "secret"):
        if (data / group).is_dir():
            tests += _pair_tests(root, data / group, label, need_answer=not interactive)
    if custom:
        vdir = root / "output_validators"
        src = None
        if vdir.is_dir():
            for sub in sorted(p for p in vdir.iterdir() if p.is_dir()) or [vdir]:
                src = next((p for p in sorted(sub.iterdir()) if p.suffix in SOURCE_SUFFIXES and p.is_file()), None)
                if src:
                    break
        if src is None:
            raise JudgeError("invalid_problem_package",
                             f"{label}: problem.yaml asks for a custom validator but output_validators/ holds "
                             "no .c, .cpp or .py source")
        if interactive:
            kw.update(interactor_source=src, interactor_protocol="kattis")
        else:
            kw.update(checker="kattis", checker_source=src)
    return Problem(pid, root, "kattis", tuple(tests), **kw)


def load_problem(pid: str, root: Path, label: str | None = None) -> Problem:
    """Read an unpacked package (plain or Kattis layout) into a Problem, or say what is wrong."""
    label = label or f"problem {pid}"
    root = _content_root(root)
    if (root / "problem.yaml").is_file() or (root / "data" / "secret").is_dir() or (root / "data" / "sample").is_dir():
        problem = _load_kattis(pid, root, label)
    else:
        cfg = _read_toml(root / "problem.toml", label) if (root / "problem.toml").is_file() else {}
        kw: dict[str, Any] = {k: cfg[k] for k in ("name", "time_limit_ms", "memory_limit_mib", "output_limit_kib",
                                                  "checker", "float_abs_tol", "float_rel_tol", "run_all_tests")
                              if k in cfg}
        for k in ("float_abs_tol", "float_rel_tol"):
            if k in kw:
                kw[k] = float(kw[k])
        if "checker_source" in cfg:
            kw["checker_source"] = _inside(root, cfg["checker_source"], label, "checker_source")
            kw.setdefault("checker", "testlib")
        elif kw.get("checker") in PROGRAM_CHECKERS or "checker" not in kw:
            found = _find_source(root, ("check", "checker"))
            if found is not None:
                kw["checker_source"] = found
                kw.setdefault("checker", "testlib")
            elif kw.get("checker") in PROGRAM_CHECKERS:
                raise JudgeError("invalid_problem_package",
                                 f"{label}: checker = {kw['checker']!r} needs checker_source (or a check.c/.cpp/.py)")
        inter = cfg.get("interactor_source")
        if inter:
            kw["interactor_source"] = _inside(root, inter, label, "interactor_source")
        else:
            found = _find_source(root, ("interactor", "interact"))
            if found is not None:
                kw["interactor_source"] = found
        if "interactor_protocol" in cfg:
            if cfg["interactor_protocol"] not in PROGRAM_CHECKERS:
                raise JudgeError("invalid_problem_package",
                                 f"{label}: interactor_protocol must be 'testlib' or 'kattis'")
            kw["interactor_protocol"] = cfg["interactor_protocol"]
        tests = _pair_tests(root, root, label, need_answer="interactor_source" not in kw)
        points = float(cfg.get("points", 1.0))
        tests = [replace(t, points=points) for t in tests]
        problem = Problem(pid, root, "plain", tuple(tests), **kw)
    if not problem.tests:
        raise JudgeError("invalid_problem_package",
                         f"{label} has no test case: add pairs such as 1.in/1.out (or data/secret/*.in/*.ans "
                         "in the Kattis layout)")
    return problem


# ---------------------------------------------------------------- the store

@dataclass(frozen=True)
class ProblemInfo:
    """A stored problem: its id, content hash and limit overrides."""

    id: str
    sha256: str
    tests: int
    format: str
    time_limit_ms: int | None = None
    memory_limit_mib: int | None = None
    name: str = ""
    added_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored next to the package."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class ProblemStore:
    """Problems in Conveyor storage (``problems/{sha256}.zip`` + ``problems/{id}.json``), unpacked on demand."""

    ID_LEN = 12

    def __init__(self, storage: Storage, root: Path | None = None, limits: UnpackLimits | None = None) -> None:
        self.storage = storage
        self._root = root
        self.limits = limits or UnpackLimits()

    @property
    def root(self) -> Path:
        """The local cache directory."""
        if self._root is None:
            self._root = cache_root()
        return self._root

    def add(self, data: bytes, *, time_limit_ms: int | None = None, memory_limit_mib: int | None = None,
            label: str = "package") -> ProblemInfo:
        """Validate and store a zipped package; returns its id (same bytes → same id)."""
        sha = hashlib.sha256(data).hexdigest()
        problem = self._unpacked(sha, sha[: self.ID_LEN], lambda: data, label)
        info = ProblemInfo(sha[: self.ID_LEN], sha, len(problem.tests), problem.format, time_limit_ms,
                           memory_limit_mib, problem.name, datetime.now(UTC).isoformat())
        self.storage.put(f"problems/{sha}.zip", data)
        self.storage.put(f"problems/{info.id}.json", json.dumps(info.as_dict()).encode())
        return info

    def info(self, problem_id: str) -> ProblemInfo:
        """The stored record of a problem id."""
        if not isinstance(problem_id, str) or not re.fullmatch(r"[0-9a-f]{6,64}", problem_id):
            raise JudgeError("problem_not_found", f"{problem_id!r} is not a problem id (hex digits, as "
                                                  "`conveyor judge problem add` prints)")
        key = f"problems/{problem_id[: self.ID_LEN]}.json"
        if not self.storage.exists(key):
            raise JudgeError("problem_not_found", f"no problem {problem_id} in storage {self.storage.base_url}; "
                                                  "add it with `conveyor judge problem add`")
        raw = json.loads(self.storage.get(key))
        return ProblemInfo(**{k: raw.get(k) for k in ProblemInfo.__dataclass_fields__})

    def list(self) -> Iterator[ProblemInfo]:
        """Every stored problem."""
        for key in self.storage.list("problems"):
            if key.endswith(".json"):
                yield self.info(key.rsplit("/", 1)[-1][:-5])

    def load(self, problem_id: str) -> Problem:
        """The problem unpacked in the local cache, with its stored limit overrides applied."""
        info = self.info(problem_id)
        zkey = f"problems/{info.sha256}.zip"
        if not self.storage.exists(zkey) and not (self.root / "problems" / info.sha256 / ".ready").exists():
            raise JudgeError("problem_not_found", f"problem {info.id}: its package {zkey} is missing from storage")
        problem = self._unpacked(info.sha256, info.id, lambda: self.storage.get(zkey), f"problem {info.id}")
        over: dict[str, Any] = {}
        if info.time_limit_ms:
            over["time_limit_ms"] = info.time_limit_ms
        if info.memory_limit_mib:
            over["memory_limit_mib"] = info.memory_limit_mib
        return replace(problem, **over) if over else problem

    def _unpacked(self, sha: str, pid: str, fetch: Any, label: str) -> Problem:
        base = self.root / "problems"
        final = base / sha
        if (final / ".ready").exists():
            return load_problem(pid, final / "pkg", label)
        with open(base / f".{sha}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / ".ready").exists():
                data = fetch()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise JudgeError("invalid_problem_package", f"{label}: stored package does not match its hash")
                tmp = base / f".tmp-{uuid.uuid4().hex}"
                try:
                    safe_unpack(data, tmp / "pkg", self.limits, label)
                    load_problem(pid, tmp / "pkg", label)
                    (tmp / ".ready").touch()
                    if final.exists():
                        shutil.rmtree(final)
                    os.rename(tmp, final)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
        return load_problem(pid, final / "pkg", label)
