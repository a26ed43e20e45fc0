"""Problem packages: safe unpacking, the plain and Kattis layouts, and the store behind problem ids."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.plugin_api import ConfigError, Storage
from conveyor_judge import bounds
from conveyor_judge.errors import JudgeError
from conveyor_judge.feedback import parse_feedback
from conveyor_judge.hookspecs import CHECKERS
from conveyor_judge.unpack import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_UNPACKED_MB,
    PATH_MAX_BYTES,
    UnpackLimits,
    safe_unpack,
    zip_directory,
)
from conveyor_sandbox.cleanup import CleanupError, remove_tree

__all__ = ["DEFAULT_MAX_FILES", "DEFAULT_MAX_UNPACKED_MB", "Problem", "ProblemInfo", "ProblemStore", "TestCase",
           "UnpackLimits", "load_problem", "safe_unpack", "zip_directory"]

log = logging.getLogger("conveyor.judge")

DEFAULT_TIME_LIMIT_MS = 1000
DEFAULT_MEMORY_LIMIT_MIB = 256
DEFAULT_OUTPUT_LIMIT_KIB = 16 * 1024
#: problem.toml and problem.yaml larger than this are refused (they hold a few settings)
SETTINGS_MAX_BYTES = 64 * 1024

#: problem.toml keys and their types
TOML_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "time_limit_ms": (int,), "memory_limit_mib": (int,), "output_limit_kib": (int,),
    "checker": (str,), "checker_source": (str,), "float_abs_tol": (int, float), "float_rel_tol": (int, float),
    "interactor_source": (str,), "interactor_protocol": (str,), "run_all_tests": (bool,), "points": (int, float),
    "feedback": (str,), "samples": (list,),
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


@dataclass(frozen=True)
class TestCase:
    """One test: its name, input file and expected answer (None for some interactive tests)."""

    __test__ = False  # not a pytest class
    name: str
    input: Path
    answer: Path | None
    points: float = 1.0
    sample: bool = False  # public: shown to everyone (Kattis data/sample/, or listed in problem.toml samples)


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
    feedback: str | None = None  # what submitters see (conveyor_judge.feedback); None: the deployment's policy

    @property
    def interactive(self) -> bool:
        """Whether submissions talk to an interactor instead of reading a file."""
        return self.interactor_source is not None

    @property
    def max_score(self) -> float:
        """Sum of every test's points."""
        return float(sum(t.points for t in self.tests))

    @property
    def samples(self) -> tuple[TestCase, ...]:
        """The tests the package marks public (shown by ``GET /problems/{id}``); never the others."""
        return tuple(t for t in self.tests if t.sample)


# ---------------------------------------------------------------- layouts

def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _kattis_data(root: Path) -> bool:
    return (root / "data" / "secret").is_dir() or (root / "data" / "sample").is_dir()


def _content_root(root: Path) -> Path:
    """Descend through a single wrapping folder (``problem/1.in`` zipped with its folder)."""
    cur = root
    while True:
        if _kattis_data(cur):  # a Kattis package of data/ alone is not a wrapping folder
            return cur
        entries = [e for e in cur.iterdir() if e.name not in ("__MACOSX", ".DS_Store")]
        if len(entries) == 1 and entries[0].is_dir():
            cur = entries[0]
            continue
        return cur


def _pair_tests(base: Path, under: Path, label: str, need_answer: bool, sample: bool = False) -> list[TestCase]:
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
        tests.append(TestCase(rel[:-3], inp, ans, sample=sample))
    return tests


def _find_source(d: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suf in SOURCE_SUFFIXES:
            p = d / f"{stem}{suf}"
            if p.is_file():
                return p
    return None


def _settings_text(path: Path, label: str) -> str:
    """The text of problem.toml / problem.yaml, refused when it is not small UTF-8."""
    if path.stat().st_size > SETTINGS_MAX_BYTES:
        raise JudgeError("invalid_problem_package", f"{label}: {path.name} is larger than "
                                                    f"{SETTINGS_MAX_BYTES // 1024} KiB; keep it to its settings")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise JudgeError("invalid_problem_package", f"{label}: {path.name} is not UTF-8 text ({exc})") from None


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(_settings_text(path, label))
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise JudgeError("invalid_problem_package", f"{label}: problem.toml is not valid TOML ({exc})") from None
    for key, value in data.items():
        if key not in TOML_KEYS:
            raise JudgeError("invalid_problem_package",
                             f"{label}: problem.toml has unknown key {key!r}; known keys: {', '.join(TOML_KEYS)}")
        if (isinstance(value, bool) and bool not in TOML_KEYS[key]) or not isinstance(value, TOML_KEYS[key]):
            raise JudgeError("invalid_problem_package",
                             f"{label}: problem.toml {key} = {str(value)[:40]} should be a "
                             f"{' or '.join(t.__name__ for t in TOML_KEYS[key])}")
    if "samples" in data and not all(isinstance(v, str) for v in data["samples"]):
        raise JudgeError("invalid_problem_package",
                         f"{label}: problem.toml samples should be a list of test names, such as [\"1\", \"2\"]")
    return data


def _mark_samples(tests: list[TestCase], names: list[str], label: str) -> list[TestCase]:
    """The tests with those named in problem.toml ``samples`` marked public; an unknown name is refused."""
    known = {t.name for t in tests}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise JudgeError("invalid_problem_package",
                         f"{label}: problem.toml samples names {unknown[0][:80]!r}, which is not a test of the "
                         "package (a test's name is its .in path without the suffix, such as \"1\" or "
                         "\"tests/group2/10\")")
    wanted = set(names)
    return [replace(t, sample=True) if t.name in wanted else t for t in tests]


def _source_path(root: Path, rel: str, label: str, what: str) -> Path:
    """A checker or interactor source named by the package: a file inside it, in a language the judge compiles."""
    if len(rel.encode("utf-8", "surrogateescape")) > PATH_MAX_BYTES:
        raise JudgeError("invalid_problem_package", f"{label}: {what} is longer than {PATH_MAX_BYTES} bytes")
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()) or not p.is_file():
        raise JudgeError("invalid_problem_package", f"{label}: {what} {rel[:80]!r} is not a file in the package")
    return _known_source(p, label, what)


def _known_source(p: Path, label: str, what: str) -> Path:
    if p.suffix.lower() not in SOURCE_SUFFIXES:
        raise JudgeError("invalid_problem_package",
                         f"{label}: {what} {p.name[:80]!r} is not the source of a language the judge compiles "
                         f"({', '.join(SOURCE_SUFFIXES)}); name the checker's source, not a test file")
    return p


def check_problem(problem: Problem, label: str) -> Problem:
    """Refuse a problem whose numbers are not finite or outside their documented ranges."""
    for key in ("time_limit_ms", "memory_limit_mib", "output_limit_kib"):
        bounds.check_int_range(getattr(problem, key), key, label)
    for key in ("float_abs_tol", "float_rel_tol"):
        bounds.check_range(getattr(problem, key), key, label)
    for t in problem.tests:
        bounds.check_range(t.points, "points", label)
    if len(problem.name) > bounds.NAME_MAX_CHARS:
        raise JudgeError("invalid_problem_package", f"{label}: name is longer than {bounds.NAME_MAX_CHARS} characters")
    if problem.feedback is not None:
        parse_feedback(problem.feedback, label)
    for what, src in (("checker_source", problem.checker_source), ("interactor_source", problem.interactor_source)):
        if src is not None:
            _known_source(src, label, what)
    return problem


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


def _yaml_text(meta: dict[str, Any], key: str, label: str, default: str = "") -> str:
    """A text setting of problem.yaml; a list or map where text belongs is refused."""
    value = meta.get(key, default)
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        raise JudgeError("invalid_problem_package", f"{label}: problem.yaml {key} should be text")
    return str(value)[:1000]


def _load_kattis(pid: str, root: Path, label: str) -> Problem:
    meta: dict[str, Any] = {}
    if (root / "problem.yaml").is_file():
        text = _settings_text(root / "problem.yaml", label)
        try:
            loaded = parse_simple_yaml(text)
        except Exception as exc:  # PyYAML raises many kinds of errors on hostile input
            raise JudgeError("invalid_problem_package", f"{label}: problem.yaml cannot be read "
                                                        f"({type(exc).__name__})") from None
        meta = loaded if isinstance(loaded, dict) else {}
    validation = _yaml_text(meta, "validation", label, "default")
    ptype = _yaml_text(meta, "type", label)
    interactive = "interactive" in validation or "interactive" in ptype
    custom = interactive or "custom" in validation
    kw: dict[str, Any] = {"name": _yaml_text(meta, "name", label) if not isinstance(meta.get("name"), dict) else ""}
    raw_limits = meta.get("limits")
    limits: dict[str, Any] = raw_limits if isinstance(raw_limits, dict) else {}
    if limits.get("memory") is not None:
        kw["memory_limit_mib"] = bounds.check_int_range(limits["memory"], "memory_limit_mib",
                                                        f"{label}: problem.yaml limits.memory")
    if limits.get("time_limit") is not None:
        seconds = bounds.number(limits["time_limit"], "time_limit_ms", f"{label}: problem.yaml limits.time_limit")
        kw["time_limit_ms"] = bounds.check_int_range(round(seconds * 1000), "time_limit_ms",
                                                     f"{label}: problem.yaml limits.time_limit")
    tl_file = root / ".timelimit"
    if tl_file.is_file():
        words = tl_file.read_bytes()[:100].decode("utf-8", "replace").split()
        if not words:
            raise JudgeError("invalid_problem_package", f"{label}: .timelimit must hold seconds, such as 2 or 0.5")
        seconds = bounds.number(words[0], "time_limit_ms", f"{label}: .timelimit")
        kw["time_limit_ms"] = bounds.check_int_range(round(seconds * 1000), "time_limit_ms", f"{label}: .timelimit")
    flags = _yaml_text(meta, "validator_flags", label).split()
    for i, flag in enumerate(flags[:-1]):
        if flag in ("float_tolerance", "float_absolute_tolerance", "float_relative_tolerance"):
            kw["checker"] = "floats"
            tol = bounds.check_range(flags[i + 1], "float_abs_tol", f"{label}: problem.yaml validator_flags {flag}")
            if flag != "float_relative_tolerance":
                kw["float_abs_tol"] = tol
            if flag != "float_absolute_tolerance":
                kw["float_rel_tol"] = tol
    data = root / "data"
    tests: list[TestCase] = []
    for group in ("sample", "secret"):
        if (data / group).is_dir():
            tests += _pair_tests(root, data / group, label, need_answer=not interactive, sample=group == "sample")
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
    if (root / "problem.yaml").is_file() or _kattis_data(root):
        problem = _load_kattis(pid, root, label)
    else:
        cfg = _read_toml(root / "problem.toml", label) if (root / "problem.toml").is_file() else {}
        kw: dict[str, Any] = {k: cfg[k] for k in ("name", "time_limit_ms", "memory_limit_mib", "output_limit_kib",
                                                  "checker", "float_abs_tol", "float_rel_tol", "run_all_tests",
                                                  "feedback")
                              if k in cfg}
        for k in ("float_abs_tol", "float_rel_tol"):
            if k in kw:
                kw[k] = float(kw[k])
        if "checker_source" in cfg:
            kw["checker_source"] = _source_path(root, cfg["checker_source"], label, "checker_source")
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
            kw["interactor_source"] = _source_path(root, inter, label, "interactor_source")
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
        points = bounds.check_range(cfg.get("points", 1.0), "points", label)
        tests = [replace(t, points=points) for t in tests]
        if "samples" in cfg:
            tests = _mark_samples(tests, cfg["samples"], label)
        problem = Problem(pid, root, "plain", tuple(tests), **kw)
    if not problem.tests:
        raise JudgeError("invalid_problem_package",
                         f"{label} has no test case: add pairs such as 1.in/1.out (or data/secret/*.in/*.ans "
                         "in the Kattis layout)")
    return check_problem(problem, label)


# ---------------------------------------------------------------- the store

@dataclass(frozen=True)
class ProblemInfo:
    """A stored problem: its id, content hash and overrides given to ``problem add``."""

    id: str
    sha256: str
    tests: int
    format: str
    time_limit_ms: int | None = None
    memory_limit_mib: int | None = None
    name: str = ""
    added_at: str = ""
    feedback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored next to the package."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _registered_checkers() -> set[str]:
    from conveyor.plugin_api import get_plugins
    return {c.id for c in get_plugins().registry(CHECKERS)}


def check_overrides(time_limit_ms: int | None, memory_limit_mib: int | None, feedback: str | None,
                    label: str) -> None:
    """Refuse ``problem add`` overrides outside the documented ranges."""
    if time_limit_ms is not None:
        bounds.check_int_range(time_limit_ms, "time_limit_ms", f"{label}: --time-limit")
    if memory_limit_mib is not None:
        bounds.check_int_range(memory_limit_mib, "memory_limit_mib", f"{label}: --memory-limit")
    if feedback is not None:
        parse_feedback(feedback, f"{label}: --feedback")


def check_title(title: str, label: str) -> str:
    """A problem's display name: at most ``NAME_MAX_CHARS`` printable characters."""
    if not isinstance(title, str) or len(title) > bounds.NAME_MAX_CHARS or not title.isprintable():
        raise JudgeError("invalid_problem_package", f"{label}: the title must be at most {bounds.NAME_MAX_CHARS} "
                                                    "printable characters")
    return title


def discard(path: Path) -> bool:
    """Remove a tree the judge made, logging (never raising) when it cannot; True if it is gone."""
    try:
        remove_tree(path)
        return True
    except CleanupError as exc:
        log.warning("cannot remove %s (%s); a later sweep tries again", path, exc)
        return False


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` to ``final``, setting aside an old ``final`` that is in the way."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    aside = final.parent / f".trash-{uuid.uuid4().hex}"
    os.rename(final, aside)
    discard(aside)
    os.rename(tmp, final)


class ProblemStore:
    """Problems in Conveyor storage (``problems/{sha256}.zip`` + ``problems/{id}.json``), unpacked on demand."""

    ID_LEN = 12

    def __init__(self, storage: Storage, root: Path | None = None, limits: UnpackLimits | None = None,
                 checkers: Iterable[str] | None = None) -> None:
        self.storage = storage
        self._root = root
        self.limits = limits or UnpackLimits()
        self._checkers = set(checkers) if checkers is not None else None

    @property
    def root(self) -> Path:
        """The local cache directory."""
        if self._root is None:
            self._root = cache_root()
        return self._root

    def checker_ids(self) -> set[str]:
        """Ids a problem's ``checker`` may name: the registered checkers and the program protocols."""
        if self._checkers is None:
            self._checkers = _registered_checkers()
        return self._checkers | set(PROGRAM_CHECKERS)

    def add(self, data: bytes, *, time_limit_ms: int | None = None, memory_limit_mib: int | None = None,
            feedback: str | None = None, label: str = "package", title: str | None = None) -> ProblemInfo:
        """Validate and store a zipped package; returns its id (same bytes → same id).

        ``title`` replaces the package's ``name``; adding the same bytes again replaces the title
        and the limit overrides of the stored record.
        """
        check_overrides(time_limit_ms, memory_limit_mib, feedback, label)
        if title is not None:
            check_title(title, label)
        sha = hashlib.sha256(data).hexdigest()
        problem = self._unpacked(sha, sha[: self.ID_LEN], lambda: data, label, self._check_checker)
        self._check_checker(problem, label)
        info = ProblemInfo(sha[: self.ID_LEN], sha, len(problem.tests), problem.format, time_limit_ms,
                           memory_limit_mib, title or problem.name, datetime.now(UTC).isoformat(),
                           parse_feedback(feedback, label).value if feedback else None)
        self._put_private(f"problems/{sha}.zip", data)
        self._put_private(f"problems/{info.id}.json", json.dumps(info.as_dict()).encode())
        return info

    def _check_checker(self, problem: Problem, label: str) -> None:
        known = self.checker_ids()
        if problem.checker not in known:
            raise JudgeError("invalid_problem_package",
                             f"{label}: checker = {problem.checker!r} is not registered here (known: "
                             f"{', '.join(sorted(known))}); install the plugin that provides it or pick a known one")

    def _put_private(self, key: str, data: bytes) -> None:
        """Store an object; on local-disk storage, readable by this user only (0600)."""
        self.storage.put(key, data)
        if self.storage.protocol == "file":
            os.chmod(self.storage.path(key), 0o600)

    def info(self, problem_id: str) -> ProblemInfo:
        """The stored record of a problem id."""
        if not isinstance(problem_id, str) or not re.fullmatch(r"[0-9a-f]{6,64}", problem_id):
            raise JudgeError("problem_not_found", f"{str(problem_id)[:80]!r} is not a problem id (hex digits, as "
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
        """The problem unpacked in the local cache, with its stored overrides applied."""
        info = self.info(problem_id)
        zkey = f"problems/{info.sha256}.zip"
        if not self.storage.exists(zkey) and not (self.root / "problems" / info.sha256 / ".ready").exists():
            raise JudgeError("problem_not_found", f"problem {info.id}: its package {zkey} is missing from storage")
        label = f"problem {info.id}"
        problem = self._unpacked(info.sha256, info.id, lambda: self.storage.get(zkey), label)
        over: dict[str, Any] = {}
        if info.time_limit_ms:
            over["time_limit_ms"] = info.time_limit_ms
        if info.memory_limit_mib:
            over["memory_limit_mib"] = info.memory_limit_mib
        if info.feedback:
            over["feedback"] = info.feedback
        return check_problem(replace(problem, **over), label) if over else problem

    def _unpacked(self, sha: str, pid: str, fetch: Callable[[], bytes], label: str,
                  accept: Callable[[Problem, str], None] | None = None) -> Problem:
        """The problem of package ``sha`` in the cache, unpacked (and checked by ``accept``) on first use."""
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
                    os.mkdir(tmp, 0o700)
                    safe_unpack(data, tmp / "pkg", self.limits, label)
                    fresh = load_problem(pid, tmp / "pkg", label)
                    if accept is not None:
                        accept(fresh, label)
                    os.close(os.open(tmp / ".ready", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                    replace_dir(tmp, final)
                finally:
                    discard(tmp)
        return load_problem(pid, final / "pkg", label)
