"""Run a converter in a child process with a time and memory limit, capturing its C-level output.

How the child is isolated (``CONVEYOR_CAD_ISOLATION``):

- ``auto`` (default): ``sandbox`` where a namespace sandbox is available (root, the C
  sandbox built), else ``fork``; the choice is logged once, reported by ``conveyor
  doctor`` and recorded in every job result (``isolation``).
- ``sandbox``: a fresh box of the C sandbox per conversion (``box.py``): its own uid, no
  network, only the system directories, the Python installation and the input; a host
  without one fails the conversion with ``sandbox_error`` (retryable) instead of falling back.
- ``fork``: forked from a warm fork server that has the CAD libraries imported already, so
  a conversion does not pay ~1 s of imports; the child gets its own address space,
  rlimits, session and captured stdout/stderr, but runs as the worker's user and sees
  the worker's files.
- ``subprocess``: a fresh ``python -m conveyor_cad.convert_child``; slower, but it sees the
  current ``sys.path`` and environment (use it when converters are installed while
  workers run); same exposure as ``fork``.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor_cad.converter import Converter, ConvertOptions
from conveyor_cad.records import ConversionError, ConvertOutput, Stage

if TYPE_CHECKING:
    from conveyor_cad.routing import CadConfig

log = logging.getLogger("conveyor.cad")

RESULT_NAME = "_child_result.pickle"
OUTPUT_LIMIT = 8000


@dataclass(frozen=True)
class Limits:
    """Limits of one conversion child."""

    time_s: float = 120.0
    memory_mb: int = 3072
    #: largest file a sandboxed converter may write (and the worker reads back), MiB
    output_mb: int = 512


@dataclass(frozen=True)
class ChildRun:
    """How the child ended: its output or error, and what it printed."""

    output: ConvertOutput | None
    error: ConversionError | None
    captured: str
    seconds: float
    returncode: int
    #: ``sandbox:<backend>``, ``fork`` or ``subprocess``
    isolation: str = "fork"
    #: what held the child in: the sandbox's ``RunResult.enforced``, or the rlimits of the fallbacks
    enforced: tuple[str, ...] = ()


def _limits(memory_mb: int, cpu_s: float):  # type: ignore[no-untyped-def]
    def apply() -> None:
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(cpu_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")
    return text if len(text) <= OUTPUT_LIMIT else "…" + text[-OUTPUT_LIMIT:]


_SERVER_LOCK = threading.Lock()
_CONTEXT: Any = None


def _fork_context() -> Any:
    global _CONTEXT
    with _SERVER_LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            # "__main__" first: the server imports the main script once, so children do not re-run it
            ctx.set_forkserver_preload(["__main__", "conveyor_cad.warm"])
            _CONTEXT = ctx
        return _CONTEXT


def _forked_child(converter: Converter, source: str, out_dir: str, options: ConvertOptions, result: str,
                  log: str, memory_mb: int, cpu_s: float) -> None:
    gc.freeze()  # what came from the fork server is never garbage here; scanning it would copy its pages
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    _limits(memory_mb, cpu_s)()
    os.chdir(out_dir)
    from conveyor_cad.convert_child import execute
    execute(converter, Path(source), Path(out_dir), options, Path(result))


def _run_forked(converter: Converter, source: Path, out_dir: Path, options: ConvertOptions, limits: Limits,
                result_path: Path, kill_hook: Any) -> tuple[int, bytes]:
    log = out_dir / "_child_output.log"
    proc = _fork_context().Process(target=_forked_child, args=(
        converter, str(source), str(out_dir), options, str(result_path), str(log), limits.memory_mb, limits.time_s))
    proc.start()

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, TypeError):
            proc.kill()

    kill_hook(kill)
    proc.join(limits.time_s)
    if proc.is_alive():
        kill_hook(None)
        kill()
        proc.join()
    out = log.read_bytes() if log.exists() else b""
    log.unlink(missing_ok=True)
    return proc.exitcode if proc.exitcode is not None else -9, out


def _run_subprocess(converter: Converter, source: Path, out_dir: Path, options: ConvertOptions, limits: Limits,
                    result_path: Path, kill_hook: Any) -> tuple[int, bytes]:
    request = pickle.dumps({"converter": converter, "source": str(source), "out_dir": str(out_dir),
                            "options": options, "result": str(result_path)})
    env = dict(os.environ)
    # the child unpickles the converter: it must import what this process imported it from
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.Popen([sys.executable, "-m", "conveyor_cad.convert_child"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_limits(limits.memory_mb, limits.time_s), cwd=out_dir, env=env)

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    kill_hook(kill)
    try:
        out, _ = proc.communicate(request, timeout=limits.time_s)
    except subprocess.TimeoutExpired:
        kill_hook(None)
        kill()
        out, _ = proc.communicate()
    return proc.returncode, out or b""


FALLBACK_ENFORCED = ("rlimit_as", "rlimit_cpu", "wall_timer", "own_session")
MODES = ("auto", "sandbox", "fork", "subprocess")
_WARNED: set[str] = set()


def isolation_mode(cfg: CadConfig | None = None, registry: Any = None) -> tuple[str, Any, str]:
    """(mode actually used, sandbox or None, why) for the configured ``CONVEYOR_CAD_ISOLATION``."""
    from conveyor_cad.box import choose_box

    mode = cfg.isolation if cfg is not None else (os.environ.get("CONVEYOR_CAD_ISOLATION") or "auto")
    prefer = cfg.sandbox if cfg is not None else (os.environ.get("CONVEYOR_CAD_SANDBOX") or None)
    if mode in ("fork", "subprocess"):
        return mode, None, f"CONVEYOR_CAD_ISOLATION={mode}: conversions run without a sandbox"
    sandbox, why = choose_box(registry, prefer)
    if sandbox is not None:
        return "sandbox", sandbox, f"sandbox {sandbox.id!r}"
    if mode == "sandbox":
        return "sandbox", None, why
    return "fork", None, why


def run_converter(converter: Converter, source: Path, out_dir: Path, options: ConvertOptions, limits: Limits,
                  token: Any = None, *, cfg: CadConfig | None = None, sandboxes: Any = None,
                  companions: Iterable[Path] = ()) -> ChildRun:
    """Run ``converter.convert`` in a child process; the converter's faults never raise here.

    ``cfg`` gives the isolation settings (default: ``CadConfig.load()``), ``sandboxes`` the
    registry to choose a sandbox from (default: the process-wide plugins), ``companions``
    files the converter may read beside the input (a glTF's buffers).
    """
    source, out_dir = source.resolve(), out_dir.resolve()  # the child runs in out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg is None:
        from conveyor_cad.routing import CadConfig
        cfg = CadConfig.load()
    mode, sandbox, why = isolation_mode(cfg, sandboxes)
    if mode == "sandbox" and sandbox is None:
        return ChildRun(None, ConversionError("sandbox_error", f"CONVEYOR_CAD_ISOLATION=sandbox but no sandbox can "
                                              f"run conversions on this host: {why}", Stage.READ, retryable=True),
                        "", 0.0, -1, "sandbox")
    if mode == "fork" and cfg.isolation == "auto" and why not in _WARNED:
        _WARNED.add(why)
        log.warning("CAD conversions run WITHOUT a sandbox (fork as uid %d, seeing this host's files): %s",
                    os.geteuid(), why)
    killed: list[str] = []

    def kill_hook(kill: Any) -> None:
        if kill is None:  # the parent gives up at the time limit
            killed.append("time limit")
            return
        if token is not None:
            def on_cancel(reason: str) -> None:
                killed.append(reason)
                kill()
            token.on_cancel(on_cancel)

    t0 = time.monotonic()
    if sandbox is not None:
        from conveyor_cad.box import run_in_box

        output, error, captured, rc, enforced = run_in_box(sandbox, converter, source, out_dir, options, limits,
                                                           cfg.sandbox_paths, companions, kill_hook)
        seconds = time.monotonic() - t0
        isolation = f"sandbox:{sandbox.id}"
        if killed and output is None:
            error = ConversionError("conversion_failed", f"conversion stopped: {killed[0]}", Stage.READ)
        return ChildRun(output, error, _tail(captured.encode()), seconds, rc, isolation, enforced)
    result_path = out_dir / RESULT_NAME
    run = _run_subprocess if mode == "subprocess" else _run_forked
    try:
        rc, out = run(converter, source, out_dir, options, limits, result_path, kill_hook)
    except (OSError, EOFError, RuntimeError) as exc:
        # the fork server could not start (e.g. a main script without a __name__ guard): fresh interpreter
        log.warning("conversion fork server unavailable (%s: %s); using a subprocess", type(exc).__name__, exc)
        mode = "subprocess"
        rc, out = _run_subprocess(converter, source, out_dir, options, limits, result_path, kill_hook)
    seconds = time.monotonic() - t0
    captured = _tail(out)

    def child(output: ConvertOutput | None, error: ConversionError | None) -> ChildRun:
        return ChildRun(output, error, captured, seconds, rc, mode, FALLBACK_ENFORCED)

    if killed:
        what = killed[0]
        msg = (f"converter {converter.id!r} exceeded its time limit of {limits.time_s:g}s and was killed"
               if what == "time limit" else f"conversion stopped: {what}")
        return child(None, ConversionError("conversion_failed", msg, Stage.READ))
    if result_path.exists() and rc == 0:
        try:
            with open(result_path, "rb") as fh:
                kind, value = pickle.load(fh)
        except Exception as exc:
            return child(None, ConversionError("conversion_failed", f"converter {converter.id!r} left an "
                                               f"unreadable result: {exc}", Stage.WRITE))
        finally:
            result_path.unlink(missing_ok=True)
        if kind == "ok":
            return child(value, None)
        return child(None, value)
    if rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        reason = {"SIGXCPU": f"it used more than {limits.time_s:g}s of CPU",
                  "SIGKILL": "it was killed (out of memory?)"}.get(sig, "it crashed")
        msg = f"converter {converter.id!r} died with {sig}: {reason}"
    else:
        msg = f"converter {converter.id!r} exited with status {rc} without a result"
        if "MemoryError" in captured or "std::bad_alloc" in captured:
            msg += f" (ran out of memory: limit {limits.memory_mb} MB)"
    return child(None, ConversionError("conversion_failed", msg, Stage.READ))
