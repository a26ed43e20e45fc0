"""Child process of one conversion: run the converter once and record the outcome.

Started three ways (``isolation.run_converter``):

- ``python -m conveyor_cad.convert_child --box`` inside a sandbox box (``box.py``): the
  request (pickled by the worker) comes on stdin, the input is ``input/<name>`` in the work
  directory, files go to ``out/``, and the outcome is written as ``result.json``: JSON,
  because the worker must not unpickle what an untrusted process wrote;
- ``python -m conveyor_cad.convert_child --warm`` in a warm-up box: builds the font caches
  and lists them in ``seed/manifest.json``;
- ``python -m conveyor_cad.convert_child`` (request on stdin) or forked from the warm fork
  server, without a sandbox: the outcome is pickled to the path the request names.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from conveyor_cad.records import ConversionError, ConvertOutput, Stage

CANCEL_NAME = "cancel"
RESULT_NAME = "result.json"


def outcome_of(converter: Any, source: Path, out_dir: Path, options: Any,
               output_mb: int | None = None) -> tuple[str, Any]:
    """Run the converter: ``("ok", ConvertOutput)`` or ``("error", ConversionError)``, never an exception."""
    try:
        return "ok", converter.convert(source, out_dir, options)
    except ConversionError as exc:
        return "error", exc
    except OSError as exc:
        if exc.errno != errno.EFBIG:
            sys.stdout.write(traceback.format_exc(limit=6))
            return "error", ConversionError("conversion_failed", f"{type(exc).__name__}: {exc}"[:500], Stage.READ)
        limit = f"{output_mb} MiB" if output_mb else "its limit"
        return "error", ConversionError("conversion_failed", f"the converter wrote a file larger than {limit} "
                                        "(CONVEYOR_CAD_OUTPUT_MB)", Stage.WRITE)
    except ImportError as exc:
        # a library the converter imports without ``require``: still name the fix
        return "error", ConversionError("missing_dependency", f"{exc.name or exc} is not installed; install "
                                        "the converter's dependencies (first-party: pip install "
                                        "'conveyor-jobs[cad]')", Stage.READ)
    except MemoryError:
        return "error", ConversionError("conversion_failed", "the converter ran out of memory "
                                        "(raise CONVEYOR_CAD_MEMORY_MB if the file is legitimately large)",
                                        Stage.READ)
    except RecursionError:
        return "error", ConversionError("conversion_failed", "the input nests too deeply to read", Stage.READ)
    except Exception as exc:
        sys.stdout.write(traceback.format_exc(limit=6))
        return "error", ConversionError("conversion_failed", f"{type(exc).__name__}: {exc}"[:500], Stage.READ)


def execute(converter: Any, source: Path, out_dir: Path, options: Any, result_path: Path) -> None:
    """Run the converter; every exception becomes a ``ConversionError`` outcome pickled to ``result_path``."""
    outcome = outcome_of(converter, source, out_dir, options)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(result_path, "wb") as fh:
        pickle.dump(outcome, fh)


# ------------------------------------------------------------------ inside a sandbox box


def _watchdog(workdir: str) -> None:
    """Fork a small process that kills the box when the worker creates ``cancel``.

    A separate process, because a native reader may hold the GIL for the whole conversion.
    It ends when the converter process does (it is then re-parented to the box's init).
    """
    parent = os.getpid()
    if os.fork() != 0:
        return
    try:
        os.setsid()
        flag = os.path.join(workdir, CANCEL_NAME)
        while os.getppid() == parent:
            if os.path.lexists(flag):
                os.kill(-1, signal.SIGKILL)  # every process of the box but init and this one
                break
            time.sleep(0.1)
    finally:
        os._exit(0)


def _seed_caches(workdir: str) -> None:
    """Copy the font caches the worker put in ``seed/`` to the box's private /tmp."""
    seed = os.path.join(workdir, "seed")
    for dirpath, _, names in os.walk(seed):
        rel = os.path.relpath(dirpath, seed)
        dest = os.path.normpath(os.path.join("/tmp", rel))
        os.makedirs(dest, exist_ok=True)
        for n in names:
            try:
                with open(os.path.join(dirpath, n), "rb") as src, open(os.path.join(dest, n), "wb") as dst:
                    dst.write(src.read())
            except OSError:
                pass


def _portable(kind: str, value: Any, workdir: Path) -> dict[str, Any]:
    if kind == "error":
        return {"kind": "error", "code": value.code, "message": value.message, "stage": value.stage.value,
                "retryable": bool(value.retryable)}
    out: ConvertOutput = value

    def rel(p: Path | None) -> str | None:
        if p is None:
            return None
        full = Path(os.path.abspath(p))
        if not full.is_relative_to(workdir):
            raise ConversionError("conversion_failed", f"the converter returned {p}, outside its work directory",
                                  Stage.WRITE)
        return str(full.relative_to(workdir))

    return {"kind": "ok", "geometry": rel(out.geometry), "preview": rel(out.preview), "metadata": out.metadata,
            "attributes": out.attributes, "warnings": list(out.warnings),
            "stage_errors": [dict(e) for e in out.stage_errors]}


def box_main() -> int:
    """Run one conversion inside a box: request on stdin, ``result.json`` in the work directory."""
    os.dup2(1, 2)  # one stream, in the order it was written
    workdir = Path.cwd()
    _watchdog(str(workdir))
    _seed_caches(str(workdir))
    try:
        request = pickle.loads(sys.stdin.buffer.read())
        converter, options, source = request["converter"], request["options"], workdir / request["source"]
        output_mb = request.get("output_mb")
    except Exception as exc:
        kind, value = "error", ConversionError(
            "conversion_failed", f"the conversion box could not load the converter: {type(exc).__name__}: {exc} "
            "(a converter's modules must be installed, or listed in its sandbox_modules or in "
            "CONVEYOR_CAD_SANDBOX_PATHS)"[:800], Stage.READ)
    else:
        (workdir / "out").mkdir(exist_ok=True)
        kind, value = outcome_of(converter, source, workdir / "out", options, output_mb)
    try:
        text = json.dumps(_portable(kind, value, workdir), default=str)
    except (ConversionError, ValueError, TypeError) as exc:
        err = exc if isinstance(exc, ConversionError) else ConversionError(
            "conversion_failed", f"the converter's result cannot be written as JSON: {exc}", Stage.WRITE)
        text = json.dumps(_portable("error", err, workdir))
    sys.stdout.flush()
    (workdir / RESULT_NAME).write_text(text)
    return 0


def warm_main() -> int:
    """Build the font caches of matplotlib and ezdxf in /tmp and copy them to ``seed/``."""
    os.dup2(1, 2)
    workdir = Path.cwd()
    try:
        import matplotlib.font_manager  # noqa: F401  (writes $MPLCONFIGDIR/fontlist-*.json)
    except Exception as exc:
        print(f"matplotlib: {exc}")
    try:
        from ezdxf.fonts import fonts

        fonts.font_manager.has_font("DejaVuSans.ttf")  # writes $XDG_CACHE_HOME/ezdxf/...
    except Exception as exc:
        print(f"ezdxf: {exc}")
    names = []
    for base, prefix in ((os.environ.get("MPLCONFIGDIR", ""), "matplotlib"),
                         (os.path.join(os.environ.get("XDG_CACHE_HOME", ""), "ezdxf"), "cache/ezdxf")):
        if not base or not os.path.isdir(base):
            continue
        for n in sorted(os.listdir(base)):
            if n.endswith(".json") and os.path.isfile(os.path.join(base, n)):
                dest = workdir / "seed" / prefix
                dest.mkdir(parents=True, exist_ok=True)
                (dest / n).write_bytes(Path(base, n).read_bytes())
                names.append(f"{prefix}/{n}")
    (workdir / "seed").mkdir(exist_ok=True)
    (workdir / "seed" / "manifest.json").write_text(json.dumps(names))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Read the pickled request on stdin and execute it (``--box``/``--warm``: inside a sandbox box)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--box"]:
        return box_main()
    if argv[:1] == ["--warm"]:
        return warm_main()
    r = pickle.loads(sys.stdin.buffer.read())
    execute(r["converter"], Path(r["source"]), Path(r["out_dir"]), r["options"], Path(r["result"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
