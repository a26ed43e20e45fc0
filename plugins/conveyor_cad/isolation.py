"""Run a converter in a child process with a time and memory limit, capturing its C-level output."""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor_cad.converter import Converter, ConvertOptions
from conveyor_cad.records import ConversionError, ConvertOutput, Stage

RESULT_NAME = "_child_result.pickle"
OUTPUT_LIMIT = 8000


@dataclass(frozen=True)
class Limits:
    """Limits of one conversion child."""

    time_s: float = 120.0
    memory_mb: int = 3072


@dataclass(frozen=True)
class ChildRun:
    """How the child ended: its output or error, and what it printed."""

    output: ConvertOutput | None
    error: ConversionError | None
    captured: str
    seconds: float
    returncode: int


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


def run_converter(converter: Converter, source: Path, out_dir: Path, options: ConvertOptions, limits: Limits,
                  token: Any = None) -> ChildRun:
    """Run ``converter.convert`` in a child (``python -m conveyor_cad.convert_child``); its faults never raise."""
    source, out_dir = source.resolve(), out_dir.resolve()  # the child runs in out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / RESULT_NAME
    request = pickle.dumps({"converter": converter, "source": str(source), "out_dir": str(out_dir),
                            "options": options, "result": str(result_path)})
    env = dict(os.environ)
    # the child unpickles the converter: it must import what this process imported it from
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env["MPLBACKEND"] = "Agg"
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "conveyor_cad.convert_child"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_limits(limits.memory_mb, limits.time_s), cwd=out_dir, env=env)
    killed: list[str] = []

    def kill(reason: str) -> None:
        killed.append(reason)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    if token is not None:
        token.on_cancel(kill)
    try:
        out, _ = proc.communicate(request, timeout=limits.time_s)
    except subprocess.TimeoutExpired:
        kill("time limit")
        out, _ = proc.communicate()
    seconds = time.monotonic() - t0
    captured = _tail(out or b"")
    rc = proc.returncode
    if killed:
        what = killed[0]
        msg = (f"converter {converter.id!r} exceeded its time limit of {limits.time_s:g}s and was killed"
               if what == "time limit" else f"conversion stopped: {what}")
        return ChildRun(None, ConversionError("conversion_failed", msg, Stage.READ), captured, seconds, rc)
    if result_path.exists() and rc == 0:
        try:
            with open(result_path, "rb") as fh:
                kind, value = pickle.load(fh)
        except Exception as exc:
            return ChildRun(None, ConversionError("conversion_failed", f"converter {converter.id!r} left an "
                                                  f"unreadable result: {exc}", Stage.WRITE), captured, seconds, rc)
        finally:
            result_path.unlink(missing_ok=True)
        if kind == "ok":
            return ChildRun(value, None, captured, seconds, rc)
        return ChildRun(None, value, captured, seconds, rc)
    if rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        reason = {"SIGXCPU": f"it used more than {limits.time_s:g}s of CPU",
                  "SIGKILL": "it was killed (out of memory?)"}.get(sig, "it crashed")
        msg = f"converter {converter.id!r} died with {sig}: {reason}"
    else:
        msg = f"converter {converter.id!r} exited with status {rc} without a result"
        if "MemoryError" in captured or "std::bad_alloc" in captured:
            msg += f" (ran out of memory: limit {limits.memory_mb} MB)"
    return ChildRun(None, ConversionError("conversion_failed", msg, Stage.READ), captured, seconds, rc)
