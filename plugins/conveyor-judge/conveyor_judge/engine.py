"""Compile and run submissions in the sandbox, check outputs, and give verdicts."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor_judge.checkers import Checker, CheckResult
from conveyor_judge.errors import JudgeError
from conveyor_judge.feedback import resolve as resolve_feedback
from conveyor_judge.hookspecs import CHECKERS, LANGUAGES
from conveyor_judge.languages import Language, sandbox_env
from conveyor_judge.problems import Problem, TestCase, cache_root, discard, replace_dir
from conveyor_judge.verdicts import CompileResult, JudgeResult, TestResult, Verdict
from conveyor_sandbox.cleanup import CleanupError, remove_tree
from conveyor_sandbox.contract import Limits, RunResult, Sandbox, Status, choose_sandbox, safe_read
from conveyor_sandbox.hookspecs import SANDBOXES
from conveyor_sandbox.workspace import Workspace, open_workspace

log = logging.getLogger("conveyor.judge")

COMPILE_OUTPUT_KEPT = 16 * 1024
PREVIEW_BYTES = 256
CHECKER_LIMITS = Limits(cpu_ms=10_000, wall_ms=20_000, memory_kib=512 * 1024, output_bytes=64 * 1024, pids=16)
SOURCE_MAX_BYTES = 1 << 20
COMPILE_ADDRESS_SPACE_GRACE_MIB = 4096
#: peak-memory figures that belong to the program alone (the fallback's inherited figure does not)
RELIABLE_MEMORY_SOURCES = ("cgroup_peak", "cgroup_v1_max_usage", "ru_maxrss")
TOOL_EXTRA_SUFFIXES = (".h", ".hpp", ".hh", ".hxx", ".inc")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


def compile_limits(lang: Language, address_space_only: bool = False) -> Limits:
    """Limits of one compilation (``CONVEYOR_JUDGE_COMPILE_TIME_MS``, ``_COMPILE_MEMORY_MIB``)."""
    cpu = _env_int("CONVEYOR_JUDGE_COMPILE_TIME_MS", 10_000)
    mem = _env_int("CONVEYOR_JUDGE_COMPILE_MEMORY_MIB", 1024)
    if address_space_only:
        # javac, node and rustc reserve gigabytes of address space they never touch
        mem += COMPILE_ADDRESS_SPACE_GRACE_MIB
    # glibc sizes thread stacks by RLIMIT_STACK: as large as memory, threads would exhaust RLIMIT_AS
    # a compiler's message flood is cut at the cap, not killed: warnings do not fail a build
    return Limits(cpu_ms=cpu, wall_ms=2 * cpu + 2000, memory_kib=mem * 1024, stack_kib=256 * 1024,
                  output_bytes=256 * 1024, output_kill=False, file_size_kib=256 * 1024, pids=lang.compile_pids,
                  tmp_kib=128 * 1024, allow_exec=True, socket_errno=lang.socket_errno)


def _preview(data: bytes) -> str:
    text = data[:PREVIEW_BYTES].decode("utf-8", "backslashreplace")
    return text + ("…" if len(data) > PREVIEW_BYTES else "")


def _mkdir(path: Path, mode: int) -> Path:
    path.mkdir(mode=mode)
    os.chmod(path, mode)
    return path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


STALE_RUN_SECONDS = 6 * 3600


def workspace_size() -> tuple[int, int]:
    """(KiB, inodes) of a submission's workspace: ``CONVEYOR_JUDGE_WORKSPACE_MIB`` (512) and ``_INODES`` (16384)."""
    def setting(name: str, default: int) -> int:
        raw = os.environ.get(name, "")
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = 0
        if value <= 0:
            log.warning("%s=%r is not a positive integer; using %d", name, raw, default)
            return default
        return value
    return setting("CONVEYOR_JUDGE_WORKSPACE_MIB", 512) * 1024, setting("CONVEYOR_JUDGE_WORKSPACE_INODES", 16384)


def find_language(languages: Iterable[Language], name: str) -> Language:
    """A language by id or alias (case-insensitive), or ``unknown_language``."""
    key = str(name).strip().lower()
    langs = list(languages)
    for lang in langs:
        if key == lang.id or key in lang.aliases:
            return lang
    known = ", ".join(sorted(lang.id for lang in langs))
    raise JudgeError("unknown_language", f"no language {name!r}; known: {known} (`conveyor judge languages`)")


def language_for_file(languages: Iterable[Language], filename: str) -> Language:
    """The language whose extensions include the file's, or ``unknown_language``."""
    suffix = Path(filename).suffix.lower()
    for lang in languages:
        if suffix in lang.extensions:
            return lang
    raise JudgeError("unknown_language", f"cannot tell the language of {filename!r} from its extension; "
                                         "pass --language (see `conveyor judge languages`)")


def _stale(root: Path) -> list[Path]:
    """Leftovers a killed worker can leave: run directories, half-built tools and packages, set-aside trees."""
    found: list[Path] = []
    for sub, names in (("runs", None), ("tools", (".tmp-", ".trash-")), ("problems", (".tmp-", ".trash-"))):
        try:
            with os.scandir(root / sub) as it:
                found += [Path(e.path) for e in it if names is None or e.name.startswith(names)]
        except OSError:
            continue
    return found


def sweep_runs(root: Path, older_than_s: float = STALE_RUN_SECONDS) -> int:
    """Remove leftovers older than ``older_than_s``; logs (never raises) what cannot be removed; returns how many."""
    removed = 0
    limit = time.time() - older_than_s
    for d in _stale(root):
        try:
            if os.lstat(d).st_mtime >= limit:
                continue
            remove_tree(d)
            removed += 1
        except CleanupError as exc:
            log.warning("judge sweep: cannot remove %s (%s); later judgements are not affected", d, exc)
        except OSError as exc:
            log.warning("judge sweep: cannot inspect %s (%s)", d, exc)
    return removed


@dataclass(frozen=True)
class Program:
    """A compiled (or syntax-checked) program ready to run from its build directory."""

    language: Language
    build_dir: Path
    compile: CompileResult

    def argv(self, mem_mib: int) -> list[str]:
        """The command line that runs it."""
        return self.language.argv(self.language.run, self.build_dir, mem_mib)


class Judge:
    """Judges submissions with the best sandbox, the registered languages and checkers."""

    def __init__(self, *, sandbox: Sandbox | None = None, languages: Iterable[Language] | None = None,
                 checkers: Iterable[Checker] | None = None, root: Path | None = None) -> None:
        if sandbox is None or languages is None or checkers is None:
            from conveyor.plugin_api import get_plugins
            host = get_plugins()
            sandbox = sandbox or choose_sandbox(host.registry(SANDBOXES))
            languages = languages if languages is not None else list(host.registry(LANGUAGES))
            checkers = checkers if checkers is not None else list(host.registry(CHECKERS))
        self.sandbox = sandbox
        self.languages = {lang.id: lang for lang in languages}
        self.checkers = {c.id: c for c in checkers}
        self.root = root or cache_root()
        self._as_only: bool | None = None
        self._peak_reliable = True
        self._warned_workspace = False
        sweep_runs(self.root)

    # ------------------------------------------------------------ lookup

    def language(self, name: str) -> Language:
        """A language by id or alias (case-insensitive)."""
        return find_language(self.languages.values(), name)

    def language_for_file(self, filename: str) -> Language:
        """The language whose extension the file has."""
        return language_for_file(self.languages.values(), filename)

    @property
    def address_space_only(self) -> bool:
        """True when the sandbox can bound memory only with RLIMIT_AS (no memory cgroup)."""
        if self._as_only is None:
            d = self._run_dir()
            try:
                r = self.sandbox.run(["/bin/true"], limits=Limits(cpu_ms=1000), workdir=_mkdir(d / "probe", 0o700))
                self._peak_reliable = r.memory_source in RELIABLE_MEMORY_SOURCES
                self._as_only = "rlimit_as" in r.enforced
            finally:
                discard(d)
        return self._as_only

    # ------------------------------------------------------------ building

    def _run_dir(self) -> Path:
        """A fresh work directory: a name never used before, so a leftover never blocks a later run."""
        return _mkdir(self.root / "runs" / uuid.uuid4().hex, 0o711)

    def box_paths(self, lang: Language, *extra: Path) -> list[str]:
        """Read-only paths of a box running ``lang``: ``extra`` (build directories) and the language's own.

        A path that would show the judge's cache (problems, other runs) to the box is refused.
        """
        cache = os.path.realpath(self.root)
        out = [str(p) for p in extra]
        for p in lang.box_paths():
            real = os.path.realpath(p)
            if real == cache or cache.startswith(real.rstrip("/") + "/") or real.startswith(cache + "/"):
                raise JudgeError("language_unavailable",
                                 f"language {lang.id}: read-only path {p} would show the judge cache {cache} to "
                                 "sandboxed programs; install the toolchain elsewhere or move CONVEYOR_JUDGE_CACHE")
            out.append(p)
        return out

    def build(self, lang: Language, source: bytes, build_dir: Path,
              extra_files: dict[str, bytes] | None = None) -> Program:
        """Compile ``source`` (with ``extra_files`` beside it, such as headers) into ``build_dir`` in the sandbox."""
        ok, why = lang.available()
        if not ok:
            raise JudgeError("language_unavailable", f"language {lang.id}: {why}")
        _mkdir(build_dir, 0o755)
        for name, data in (extra_files or {}).items():
            if name != lang.source_name:
                _write(build_dir / name, data)
        _write(build_dir / lang.source_name, source)
        if lang.compile is None:
            return Program(lang, build_dir, CompileResult(True))
        lim = compile_limits(lang, self.address_space_only)
        r = self.sandbox.run(lang.argv(lang.compile, build_dir, 0), limits=lim, workdir=build_dir,
                             env=sandbox_env(), readonly_paths=self.box_paths(lang))
        out = (r.stderr + (b"\n" if r.stderr and r.stdout else b"") + r.stdout)
        text = out[:COMPILE_OUTPUT_KEPT].decode("utf-8", "replace")
        if len(out) > COMPILE_OUTPUT_KEPT or r.stderr_truncated or r.stdout_truncated:
            text += f"\n… compiler output truncated ({r.stderr_len + r.stdout_len} bytes in all)"
        if r.status is Status.SANDBOX_ERROR:
            raise JudgeError("sandbox_error", f"compiling {lang.id}: {r.error_code}: {r.error_message}")
        reason = {
            Status.TIME_LIMIT: f"compilation used more than {lim.cpu_ms} ms of cpu time",
            Status.WALL_TIME_LIMIT: f"compilation took longer than {lim.effective_wall_ms} ms",
            Status.MEMORY_LIMIT: f"the compiler used more than {(lim.memory_kib or 0) // 1024} MiB",
            Status.OUTPUT_LIMIT: f"the compiler wrote more than {lim.output_bytes // 1024} KiB of messages",
            Status.SYSCALL_DENIED: "the compiler made a forbidden system call",
            Status.SIGNALLED: f"the compiler was killed by signal {r.signal}",
            Status.RUNTIME_ERROR: f"the compiler exited with code {r.exit_code}",
        }.get(r.status)
        return Program(lang, build_dir, CompileResult(reason is None, text, r.cpu_ms, reason or ""))

    def tool(self, problem: Problem, source: Path, role: str) -> Program:
        """A checker or interactor of the package, compiled once per package content and cached."""
        lang = self.language_for_file(source.name)
        code = source.read_bytes()
        # headers and helpers next to the source (testlib.h, validate.h) are compiled with it
        extra = {p.name: p.read_bytes() for p in sorted(source.parent.iterdir())
                 if p.is_file() and p != source and p.suffix in TOOL_EXTRA_SUFFIXES}
        digest = hashlib.sha256(lang.id.encode() + b"\0" + code)
        for name, data in extra.items():
            digest.update(b"\0" + name.encode() + b"\0" + data)
        # keyed by what is compiled, so packages sharing a checker share its build
        sha = digest.hexdigest()[:32]
        tools = self.root / "tools"
        tools.mkdir(mode=0o711, exist_ok=True)
        final = tools / f"{sha}-{role}"
        if not (final / ".ready").exists():
            with open(tools / f".{sha}-{role}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (final / ".ready").exists():
                    tmp = tools / f".tmp-{uuid.uuid4().hex}"
                    try:
                        prog = self.build(lang, code, tmp, extra)
                        if not prog.compile.ok:
                            raise JudgeError("checker_compile_failed",
                                             f"problem {problem.id}: {role} {source.name} does not compile: "
                                             f"{prog.compile.message}\n{prog.compile.output[:2000]}")
                        _write(tmp / ".ready", b"")
                        replace_dir(tmp, final)
                    finally:
                        discard(tmp)
        return Program(lang, final, CompileResult(True))

    # ------------------------------------------------------------ running

    def limits_for(self, problem: Problem, lang: Language) -> tuple[Limits, int, int]:
        """Sandbox limits of one test run, the heap size handed to the runtime, and the memory budget (KiB)."""
        cpu = max(1, int(problem.time_limit_ms * lang.time_factor))
        mem_mib = max(1, int(problem.memory_limit_mib * lang.memory_factor))
        budget_mib = mem_mib + lang.memory_extra_mib
        # under RLIMIT_AS alone, allocations must be allowed past the budget so the peak RSS can show MLE
        grace = 0
        if self.address_space_only:
            grace = max(lang.address_space_grace_mib, budget_mib if self._peak_reliable else 0)
        sandbox_mib = budget_mib + grace
        stack = min(sandbox_mib, 256) * 1024 if self.address_space_only else None
        lim = Limits(cpu_ms=cpu, wall_ms=2 * cpu + 1000, memory_kib=sandbox_mib * 1024, stack_kib=stack,
                     output_bytes=problem.output_limit_kib * 1024, file_size_kib=16 * 1024, pids=lang.pids,
                     socket_errno=lang.socket_errno)
        return lim, mem_mib, budget_mib * 1024

    def _verdict_of_run(self, r: RunResult, lang: Language, lim: Limits, budget_kib: int) -> tuple[Verdict, str]:
        if r.status is Status.SANDBOX_ERROR:
            raise JudgeError("sandbox_error", f"{r.error_code}: {r.error_message}")
        oom = any(m in r.stderr for m in lang.memory_error_markers)
        if r.status is Status.MEMORY_LIMIT or (oom and r.status is not Status.OK):
            return Verdict.MEMORY_LIMIT_EXCEEDED, f"memory limit {budget_kib // 1024} MiB"
        if r.status is Status.OUTPUT_LIMIT or r.stdout_truncated:
            # a flood that never ends also hits the cpu limit; the output limit was passed first
            return Verdict.OUTPUT_LIMIT_EXCEEDED, f"output limit {lim.output_bytes // 1024} KiB"
        if r.status is Status.TIME_LIMIT or (lim.cpu_ms and r.cpu_ms > lim.cpu_ms):
            return Verdict.TIME_LIMIT_EXCEEDED, f"cpu time limit {lim.cpu_ms} ms"
        if r.status is Status.WALL_TIME_LIMIT:
            return Verdict.TIME_LIMIT_EXCEEDED, f"wall time limit {lim.effective_wall_ms} ms (blocked or sleeping)"
        if r.memory_kib and r.memory_kib > budget_kib and r.memory_source in RELIABLE_MEMORY_SOURCES:
            return Verdict.MEMORY_LIMIT_EXCEEDED, f"peak memory {r.memory_kib} KiB > {budget_kib} KiB"
        if r.status is Status.SYSCALL_DENIED:
            return Verdict.RUNTIME_ERROR, "forbidden system call (killed by seccomp)"
        if r.status is Status.SIGNALLED:
            return Verdict.RUNTIME_ERROR, f"killed by signal {r.signal}"
        if r.status is Status.RUNTIME_ERROR:
            return Verdict.RUNTIME_ERROR, f"exit code {r.exit_code}"
        return Verdict.ACCEPTED, ""

    def _check(self, problem: Problem, test: TestCase, input: bytes, output: bytes, work: Path) -> CheckResult:
        answer = test.answer.read_bytes() if test.answer else b""
        if problem.checker in ("testlib", "kattis"):
            assert problem.checker_source is not None
            tool = self.tool(problem, problem.checker_source, "checker")
            wd = _mkdir(work / "check", 0o700)
            for name, data in (("input.txt", input), ("output.txt", output), ("answer.txt", answer)):
                _write(wd / name, data)
            ro = self.box_paths(tool.language, tool.build_dir)
            if problem.checker == "testlib":
                r = self.sandbox.run(tool.argv(512) + ["input.txt", "output.txt", "answer.txt"],
                                     limits=CHECKER_LIMITS, workdir=wd, env=sandbox_env(), readonly_paths=ro)
                return testlib_result(r, test.points)
            fb = _mkdir(wd / "feedback", 0o777)
            r = self.sandbox.run(tool.argv(512) + ["input.txt", "answer.txt", "feedback/"], limits=CHECKER_LIMITS,
                                 stdin=output, workdir=wd, env=sandbox_env(), readonly_paths=ro)
            return kattis_result(r, wd, fb)
        checker = self.checkers.get(problem.checker)
        if checker is None:
            raise JudgeError("invalid_problem_package",
                             f"problem {problem.id} asks for checker {problem.checker!r}, which no plugin registers "
                             f"(registered: {', '.join(sorted(self.checkers))})")
        return checker.check(input, output, answer, problem)

    def _run_test(self, problem: Problem, prog: Program, test: TestCase, work: Path) -> TestResult:
        lim, mem_mib, budget = self.limits_for(problem, prog.language)
        data = test.input.read_bytes()
        if problem.interactive:
            return self._run_interactive(problem, prog, test, data, work, lim, mem_mib, budget)
        # the box gets the input on stdin and an empty work directory: never the package or the answer
        wd = _mkdir(work / "run", 0o700)
        r = self.sandbox.run(prog.argv(mem_mib), limits=lim, stdin=data, workdir=wd, env=sandbox_env(),
                             readonly_paths=self.box_paths(prog.language, prog.build_dir))
        verdict, message = self._verdict_of_run(r, prog.language, lim, budget)
        reason = message
        score = 0.0
        if verdict is Verdict.ACCEPTED:
            res = self._check(problem, test, data, r.stdout, work)
            verdict, message = res.verdict, res.message
            reason = _checker_reason(verdict)
            score = res.score if res.score is not None else (test.points if verdict is Verdict.ACCEPTED else 0.0)
        elif r.stderr and verdict is Verdict.RUNTIME_ERROR:
            message += ": " + r.stderr[-300:].decode("utf-8", "replace").strip()
        return TestResult(test.name, verdict, r.cpu_ms, r.wall_ms, r.memory_kib, r.exit_code, r.signal, message,
                          _preview(r.stdout), score, reason)

    def _run_interactive(self, problem: Problem, prog: Program, test: TestCase, data: bytes, work: Path,
                         lim: Limits, mem_mib: int, budget: int) -> TestResult:
        assert problem.interactor_source is not None
        tool = self.tool(problem, problem.interactor_source, "interactor")
        pipes = _mkdir(work / "pipes", 0o755)
        for name in ("s2i", "i2s"):
            os.mkfifo(pipes / name, 0o666)
            os.chmod(pipes / name, 0o666)
        sub_wd = _mkdir(work / "run", 0o700)
        int_wd = _mkdir(work / "interactor", 0o700)
        _write(int_wd / "input.txt", data)
        _write(int_wd / "answer.txt", test.answer.read_bytes() if test.answer else b"")
        fb = _mkdir(int_wd / "feedback", 0o777)
        if problem.interactor_protocol == "kattis":
            iargs = tool.argv(512) + ["input.txt", "answer.txt", "feedback/"]
        else:
            _write(int_wd / "tout.txt", b"", 0o666)
            iargs = tool.argv(512) + ["input.txt", "tout.txt"]
        # the order of the redirections matters: each side opens s2i first, so neither blocks forever in open()
        sub_argv = ["/bin/sh", "-c", f'exec "$@" >{pipes}/s2i <{pipes}/i2s', "sh", *prog.argv(mem_mib)]
        int_argv = ["/bin/sh", "-c", f'exec "$@" <{pipes}/s2i >{pipes}/i2s', "sh", *iargs]
        int_lim = Limits(cpu_ms=CHECKER_LIMITS.cpu_ms, wall_ms=lim.effective_wall_ms + 1000,
                         memory_kib=CHECKER_LIMITS.memory_kib, pids=16)
        results: dict[str, RunResult] = {}

        def side(key: str, call: Callable[[], RunResult]) -> None:
            results[key] = call()

        int_ro = self.box_paths(tool.language, tool.build_dir, pipes)
        sub_ro = self.box_paths(prog.language, prog.build_dir, pipes)
        t = threading.Thread(target=side, args=("int", lambda: self.sandbox.run(
            int_argv, limits=int_lim, workdir=int_wd, env=sandbox_env(), readonly_paths=int_ro)))
        t.start()
        try:
            side("sub", lambda: self.sandbox.run(sub_argv, limits=lim, workdir=sub_wd, env=sandbox_env(),
                                                 readonly_paths=sub_ro))
        finally:
            t.join()
        r, ir = results["sub"], results["int"]
        verdict, message = self._verdict_of_run(r, prog.language, lim, budget)
        if ir.status is Status.SANDBOX_ERROR:
            raise JudgeError("sandbox_error", f"interactor: {ir.error_code}: {ir.error_message}")
        if problem.interactor_protocol == "kattis":
            check = kattis_result(ir, int_wd, fb) if ir.status in (Status.OK, Status.RUNTIME_ERROR) else None
        else:
            check = testlib_result(ir, test.points) if ir.status in (Status.OK, Status.RUNTIME_ERROR) else None
            if check is not None and check.verdict is Verdict.ACCEPTED and problem.checker == "testlib" \
                    and problem.checker_source is not None:
                # testlib pairs: the interactor's tout is the output the package's checker judges
                tout = safe_read(int_wd, "tout.txt", problem.output_limit_kib * 1024)
                check = self._check(problem, test, data, tout, work)
        sigpipe = r.status is Status.SIGNALLED and r.signal == 13
        if check is None:
            final, msg, score = Verdict.SYSTEM_ERROR, f"interactor ended with {ir.status.value}: {_msg(ir)}", 0.0
            reason = _checker_reason(final)
        elif sigpipe or (check.verdict is not Verdict.ACCEPTED and verdict not in _LIMIT_VERDICTS) \
                or verdict is Verdict.ACCEPTED:
            # a submission killed by SIGPIPE after the interactor finished gets the interactor's verdict
            final, msg = check.verdict, check.message
            reason = _checker_reason(final)
            score = check.score if check.score is not None else (test.points if final is Verdict.ACCEPTED else 0.0)
        else:
            final, msg, score = verdict, message, 0.0
            reason = message
        return TestResult(test.name, final, r.cpu_ms, r.wall_ms, r.memory_kib, r.exit_code, r.signal, msg, "",
                          score, reason)

    # ------------------------------------------------------------ the whole submission

    def judge(self, problem: Problem, language: str | Language, source: bytes, *,
              cancelled: Callable[[], None] | None = None, run_all: bool | None = None) -> JudgeResult:
        """Compile, run every test (stopping at the first failure unless the problem asks for all), and judge."""
        lang = language if isinstance(language, Language) else self.language(language)
        if len(source) > SOURCE_MAX_BYTES:
            raise JudgeError("invalid_payload", f"the source is {len(source)} bytes; the limit is {SOURCE_MAX_BYTES}")
        all_tests = problem.run_all_tests if run_all is None else run_all
        feedback = resolve_feedback(problem.feedback).value
        ws = self._workspace()
        run_dir = ws.path if ws else self._run_dir()
        try:
            prog = self.build(lang, source, run_dir / "build")
            if not prog.compile.ok:
                return JudgeResult(Verdict.COMPILE_ERROR, 0.0, problem.max_score, lang.id, problem.id, prog.compile,
                                   (), len(problem.tests), self.sandbox.id, prog.compile.message, feedback)
            rows: list[TestResult] = []
            for i, test in enumerate(problem.tests):
                if cancelled:
                    cancelled()
                row = self._run_test(problem, prog, test, _mkdir(run_dir / f"t{i}", 0o711))
                # what the program left (a 10,000-deep tree, mode 000 folders) goes now; if it cannot, the
                # run directory's unique name keeps it out of every later run's way
                discard(run_dir / f"t{i}")
                rows.append(row)
                if row.verdict is not Verdict.ACCEPTED and not all_tests:
                    break
            failed = next((r for r in rows if r.verdict is not Verdict.ACCEPTED), None)
            verdict = failed.verdict if failed else Verdict.ACCEPTED
            message = f"test {failed.name}: {failed.message}" if failed else f"{len(rows)} test(s) passed"
            return JudgeResult(verdict, round(sum(r.score for r in rows), 6), problem.max_score, lang.id, problem.id,
                               prog.compile, tuple(rows), len(problem.tests), self.sandbox.id, message, feedback)
        finally:
            if ws:
                ws.close()
            else:
                discard(run_dir)

    def _workspace(self) -> Workspace | None:
        """A bounded workspace for one submission (its own tmpfs: compile output, tests, whatever boxes write).

        None when this host cannot mount one (not root, or a container without mount rights): the
        submission then works in a plain run directory, bounded per file only, and the log says so once.
        """
        if "c-sandbox" != getattr(self.sandbox, "id", None) or os.geteuid() != 0:
            return None
        size_kib, inodes = workspace_size()
        try:
            ws = open_workspace(size_kib=size_kib, inodes=inodes)
        except OSError as exc:
            if not self._warned_workspace:
                log.warning("judge: no bounded workspace (%s); work directories are bounded per file only", exc)
                self._warned_workspace = True
            return None
        os.chmod(ws.path, 0o711)
        return ws


_LIMIT_VERDICTS = (Verdict.TIME_LIMIT_EXCEEDED, Verdict.MEMORY_LIMIT_EXCEEDED, Verdict.OUTPUT_LIMIT_EXCEEDED)


def _checker_reason(verdict: Verdict) -> str:
    """What a submitter may be told about a checker's judgement: never the checker's own words."""
    if verdict is Verdict.SYSTEM_ERROR:
        return "the checker failed; this is not the submission's fault"
    return ""
_POINTS = re.compile(rb"points\s+([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


def _msg(r: RunResult) -> str:
    return (r.stderr or r.stdout)[:500].decode("utf-8", "replace").strip()


def testlib_result(r: RunResult, points: float) -> CheckResult:
    """A testlib-protocol checker's verdict from its exit code (0 ok, 1 wa, 2 pe, 3 fail, 7 points)."""
    if r.status not in (Status.OK, Status.RUNTIME_ERROR):
        return CheckResult(Verdict.SYSTEM_ERROR, f"checker ended with {r.status.value}: {_msg(r)}")
    code = r.exit_code or 0
    if code == 0:
        return CheckResult(Verdict.ACCEPTED, _msg(r) or "ok")
    if code == 1:
        return CheckResult(Verdict.WRONG_ANSWER, _msg(r))
    if code == 2:
        return CheckResult(Verdict.PRESENTATION_ERROR, _msg(r))
    if code == 7:
        m = _POINTS.search(r.stdout + b"\n" + r.stderr)
        if m is None:
            return CheckResult(Verdict.SYSTEM_ERROR, "checker exited 7 (partial) without 'points N'")
        got = max(0.0, min(points, float(m.group(1))))
        return CheckResult(Verdict.ACCEPTED if got >= points else Verdict.WRONG_ANSWER, _msg(r), got)
    return CheckResult(Verdict.SYSTEM_ERROR, f"checker failed (exit {code}): {_msg(r)}")


def kattis_result(r: RunResult, wd: Path, feedback: Path) -> CheckResult:
    """A Kattis-protocol validator's verdict: exit 42 accepted, 43 wrong; judgemessage.txt and score.txt read."""
    def read(name: str) -> str:
        try:
            return safe_read(wd, f"{feedback.name}/{name}", 4096).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    message = read("judgemessage.txt") or _msg(r)
    score_text = read("score.txt")
    score: float | None = None
    if score_text:
        try:
            score = float(score_text.split()[0])
        except ValueError:
            return CheckResult(Verdict.SYSTEM_ERROR, f"validator wrote a non-numeric score.txt: {score_text[:50]!r}")
    if r.status not in (Status.OK, Status.RUNTIME_ERROR):
        return CheckResult(Verdict.SYSTEM_ERROR, f"validator ended with {r.status.value}: {message}")
    if r.exit_code == 42:
        return CheckResult(Verdict.ACCEPTED, message or "ok", score)
    if r.exit_code == 43:
        return CheckResult(Verdict.WRONG_ANSWER, message, score if score is not None else 0.0)
    return CheckResult(Verdict.SYSTEM_ERROR, f"validator exited {r.exit_code} (expected 42 or 43): {message}")


def result_dict(result: JudgeResult) -> dict[str, Any]:
    """The job result object."""
    return result.as_dict()
