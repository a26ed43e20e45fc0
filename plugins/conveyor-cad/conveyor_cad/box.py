"""Conversions in the sandbox: one fresh box per conversion, its own uid, no host tree, no network.

The box comes from the strongest backend registered through ``conveyor_register_sandboxes``
(the C sandbox). It sees the sandbox's allow-listed system directories, the Python
installation and the packages the converter needs (read-only), and its work directory:

    work/                  owned by the box uid while it runs
      input/<name>         a copy of the input (and its companions); the box cannot change it
      seed/...             font caches made once by a warm-up box; the child copies them to /tmp
      out/                 what the converter writes
      result.json          the outcome as JSON (never a pickle: nothing the box writes is trusted)
      cancel               created by the worker to stop the conversion early

The worker reads the outcome and the files it names back with
``conveyor_sandbox.contract.safe_read`` (no symlinks, no ``..``, regular files only, size-bounded)
and removes the work directory without recursion.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pickle
import re
import shutil
import signal
import site
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from conveyor_cad.converter import Converter, ConvertOptions
from conveyor_cad.records import ConversionError, ConvertOutput, Stage
from conveyor_sandbox.cleanup import remove_tree
from conveyor_sandbox.hookspecs import SANDBOXES

log = logging.getLogger("conveyor.cad")

#: backends that run the program on the host's own tree (no mount namespace): never used for conversions
WEAK_BACKENDS = frozenset({"python-fallback"})
#: what the C sandbox always shows a box; binding these again is pointless
SYSTEM_ROOTS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
CHILD_ARGV = ("-P", "-s", "-B", "-m", "conveyor_cad.convert_child")
RESULT_NAME = "result.json"
CANCEL_NAME = "cancel"
RESULT_MAX = 16 * 1024 * 1024
PREVIEW_MAX = 64 * 1024 * 1024
SEED_FILE_MAX = 8 * 1024 * 1024
OUTPUT_CAP = 256 * 1024
TMP_MIB = 64
WORKSPACE_INODES = 4096  # files and folders a conversion's work directory may hold
WORKSPACE_SLACK_MIB = 64  # beyond the output limit and the inputs: previews, results, caches
WARM_WORKSPACE_MIB = 256
PIDS = 64
OPEN_FILES = 512
#: environment variables a box inherits from the worker when set (CPU quirks of OpenBLAS builds)
PASS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TZ")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


# ------------------------------------------------------------------ choosing the box


def choose_box(registry: Any = None, prefer: str | None = None) -> tuple[Any | None, str]:
    """The sandbox conversions run in, or None and why there is none here."""
    from conveyor_sandbox.contract import SandboxUnavailable, choose_sandbox

    if registry is None:
        from conveyor.plugin_api import get_plugins
        registry = get_plugins().registry(SANDBOXES)
    try:
        sandbox = choose_sandbox(registry, prefer)
    except SandboxUnavailable as exc:
        return None, str(exc)
    if sandbox.id in WEAK_BACKENDS:
        return None, (f"only the {sandbox.id!r} sandbox can run here ({sandbox.available()[1]}); it shows the "
                      "program the host's files, so conversions do not use it")
    return sandbox, "ok"


# ------------------------------------------------------------------ what the box is given


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _minimal(paths: Iterable[str]) -> list[str]:
    """Existing directories, without duplicates and without paths inside others or inside the system roots."""
    out: list[str] = []
    for p in sorted({os.path.abspath(p) for p in paths if p}, key=len):
        if os.path.isdir(p) and not _under(p, SYSTEM_ROOTS) and not _under(p, out) and p != "/":
            out.append(p)
    return out


_PY_LOCK = threading.Lock()
_PY_PATHS: list[str] | None = None


def python_paths() -> list[str]:
    """The interpreter's installation and site-packages directories (and their real paths)."""
    global _PY_PATHS
    with _PY_LOCK:
        if _PY_PATHS is None:
            found = [sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix,
                     os.path.dirname(os.path.realpath(sys.executable))]
            found += site.getsitepackages()
            if site.ENABLE_USER_SITE and site.getusersitepackages() in sys.path:
                found.append(site.getusersitepackages())
            found += [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
            _PY_PATHS = _minimal([*found, *(os.path.realpath(p) for p in found if p)])
        return list(_PY_PATHS)


def module_paths(names: Iterable[str], covered: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(directories to bind, PYTHONPATH entries, single-file modules to copy) for top-level modules."""
    import importlib

    binds: list[str] = []
    pythonpath: list[str] = []
    files: list[str] = []
    for name in dict.fromkeys(names):
        if name in ("__main__", "builtins"):
            continue  # a class defined in a script cannot be unpickled elsewhere anyway
        try:
            mod = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:
            continue  # the child says what is missing
        for p in list(getattr(mod, "__path__", None) or []):
            real = os.path.realpath(p)
            if not _under(real, covered) and os.path.isdir(real):
                binds.append(real)
                pythonpath.append(os.path.dirname(real))
        origin = getattr(mod, "__file__", None)
        if not getattr(mod, "__path__", None) and origin:
            real = os.path.realpath(origin)
            if not _under(real, covered) and os.path.isfile(real):
                files.append(real)
    return _minimal(binds), list(dict.fromkeys(pythonpath)), files


def box_env(pythonpath: Sequence[str]) -> dict[str, str]:
    """The box's whole environment: nothing of the worker's but the CPU quirks in ``PASS_ENV``."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/matplotlib", "XDG_CACHE_HOME": "/tmp/cache",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k in PASS_ENV:
        if os.environ.get(k):
            env[k] = os.environ[k]
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


@dataclasses.dataclass(frozen=True)
class BoxPlan:
    """How one conversion box is set up."""

    readonly: tuple[str, ...]
    env: dict[str, str]
    modules: tuple[str, ...]  # single-file modules copied into work/modules


def plan(converter: Converter, extra_paths: Sequence[str] = ()) -> BoxPlan:
    """Read-only binds, environment and copied modules for a converter's box."""
    py = python_paths()
    names = ["conveyor", "conveyor_cad", type(converter).__module__.partition(".")[0],
             *(m.partition(".")[0] for m in getattr(converter, "sandbox_modules", ()) or ())]
    binds, pythonpath, files = module_paths(names, py)
    extra = _minimal(p for p in extra_paths if p)
    if files:
        pythonpath.append("@modules")  # replaced by the work directory's modules/ folder
    return BoxPlan(tuple(_minimal([*py, *binds, *extra])), box_env(pythonpath), tuple(files))


# ------------------------------------------------------------------ the work directory


def _box_root(size_kib: int) -> tuple[Path, Any]:
    """A folder for one box: a bounded workspace (its own tmpfs) where one can be mounted, else a temporary folder."""
    try:
        from conveyor_sandbox.workspace import open_workspace

        ws = open_workspace(size_kib=size_kib, inodes=WORKSPACE_INODES)
        os.chmod(ws.path, 0o755)
        return ws.path, ws
    except (ImportError, OSError) as exc:
        log.debug("no bounded workspace for a CAD box (%s); using a temporary folder", exc)
        return Path(tempfile.mkdtemp(prefix="conveyor-cad-box-")), None


def _drop_root(root: Path, ws: Any) -> None:
    if ws is not None:
        ws.close()
    else:
        remove_tree(root)


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


def _safe_name(name: str) -> str:
    base = os.path.basename(name) or "input"
    return base if base not in (".", "..") else "input"


def _prepare(root: Path, source: Path, companions: Iterable[Path], seed: dict[str, bytes],
             modules: Sequence[str]) -> tuple[Path, str]:
    wd = root / "work"
    wd.mkdir(mode=0o755)
    inp = wd / "input"
    inp.mkdir(mode=0o755)
    name = _safe_name(source.name)
    for src, dest in ((source, name), *((c, _safe_name(c.name)) for c in companions)):
        shutil.copyfile(src, inp / dest)
        os.chmod(inp / dest, 0o644)
    for rel, data in seed.items():
        p = wd / "seed" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    if modules:
        (wd / "modules").mkdir()
        for f in modules:
            shutil.copyfile(f, wd / "modules" / os.path.basename(f))
    for dirpath, dirnames, filenames in os.walk(wd):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return wd, name


def _cancel(wd: Path) -> None:
    """Create ``cancel`` in the work directory, never following a link the box planted."""
    try:
        dfd = os.open(wd, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fd = os.open(CANCEL_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dfd)
        os.close(fd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ------------------------------------------------------------------ font caches


_SEED_LOCK = threading.Lock()
_SEEDS: dict[tuple[Any, ...], dict[str, bytes]] = {}


def font_seed(sandbox: Any, box: BoxPlan) -> dict[str, bytes]:
    """Font caches (matplotlib, ezdxf) built once per process by a warm-up box that reads no input.

    Without them every conversion box would scan the fonts again (about half a second).
    The warm-up box runs only Conveyor's own code, so what it writes is trusted as a cache;
    a conversion box only ever gets a copy, so it cannot spoil the caches of later ones.
    """
    key = (sandbox.id, box.readonly)
    with _SEED_LOCK:
        if key not in _SEEDS:
            t0 = time.monotonic()
            try:
                _SEEDS[key] = _warm(sandbox, box)
            except Exception as exc:  # a cache is an optimisation
                log.warning("CAD font-cache warm-up box failed (%s: %s); conversions build their own",
                            type(exc).__name__, exc)
                _SEEDS[key] = {}
            log.info("CAD warm-up box: %d font cache file(s) in %.2fs", len(_SEEDS[key]), time.monotonic() - t0)
        return _SEEDS[key]


def _warm(sandbox: Any, box: BoxPlan) -> dict[str, bytes]:
    from conveyor_sandbox.contract import Limits as SandboxLimits
    from conveyor_sandbox.contract import safe_read

    root, ws = _box_root(WARM_WORKSPACE_MIB * 1024)
    try:
        wd = root / "work"
        wd.mkdir(mode=0o755)
        env = _with_modules(box.env, wd)
        r = sandbox.run([sys.executable, *CHILD_ARGV, "--warm"], workdir=wd, env=env, readonly_paths=box.readonly,
                        limits=SandboxLimits(cpu_ms=60_000, wall_ms=120_000, memory_kib=1024 * 1024,
                                             output_bytes=OUTPUT_CAP, output_kill=False, tmp_kib=TMP_MIB * 1024,
                                             pids=PIDS,
                                             open_files=OPEN_FILES))
        if r.exit_code != 0:
            said = (r.stdout + r.stderr)[-500:].decode("utf-8", "replace")
            raise RuntimeError(f"{r.status}: {r.error_message or said}")
        names = json.loads(safe_read(wd, "seed/manifest.json", 1 << 20))
        seed = {}
        for rel in names if isinstance(names, list) else []:
            if isinstance(rel, str) and rel != "manifest.json":
                data = safe_read(wd, f"seed/{rel}", SEED_FILE_MAX + 1)
                if len(data) <= SEED_FILE_MAX:
                    seed[rel] = data
        return seed
    finally:
        _drop_root(root, ws)


def _with_modules(env: dict[str, str], wd: Path) -> dict[str, str]:
    if "PYTHONPATH" not in env:
        return env
    parts = [str(wd / "modules") if p == "@modules" else p for p in env["PYTHONPATH"].split(os.pathsep)]
    return {**env, "PYTHONPATH": os.pathsep.join(parts)}


# ------------------------------------------------------------------ one conversion


def run_in_box(sandbox: Any, converter: Converter, source: Path, out_dir: Path, options: ConvertOptions,
               limits: Any, extra_paths: Sequence[str] = (), companions: Iterable[Path] = (),
               on_kill: Any = None) -> tuple[ConvertOutput | None, ConversionError | None, str, int, tuple[str, ...]]:
    """Convert ``source`` in a fresh box; (output, error, captured output, returncode, enforced).

    ``on_kill(kill)`` is called with a function that stops the box early (cancellation).
    Never raises for what the converter does.
    """
    from conveyor_sandbox.contract import Limits as SandboxLimits
    from conveyor_sandbox.contract import Status

    box = plan(converter, extra_paths)
    seed = font_seed(sandbox, box)
    companions = list(companions)
    inputs = sum(p.stat().st_size for p in (source, *companions)) + sum(len(v) for v in seed.values())
    root, ws = _box_root(limits.output_mb * 1024 + inputs // 1024 + WORKSPACE_SLACK_MIB * 1024)
    done = threading.Event()
    try:
        wd, name = _prepare(root, source, companions, seed, box.modules)
        # a presigned URL is for connectors, which never run in a box
        request = pickle.dumps({"converter": converter, "source": f"input/{name}", "output_mb": limits.output_mb,
                                "options": dataclasses.replace(options, source_signed_url=None)})
        if on_kill is not None:
            on_kill(lambda: None if done.is_set() else _cancel(wd))
        time_ms = max(1, int(limits.time_s * 1000))
        lim = SandboxLimits(cpu_ms=time_ms, wall_ms=time_ms, memory_kib=limits.memory_mb * 1024,
                            # a converter's chatter is cut at the cap, not killed
                            output_bytes=OUTPUT_CAP, output_kill=False, file_size_kib=limits.output_mb * 1024,
                            pids=PIDS, open_files=OPEN_FILES, tmp_kib=TMP_MIB * 1024)
        try:
            r = sandbox.run([sys.executable, *CHILD_ARGV, "--box"], limits=lim, stdin=request, workdir=wd,
                            env=_with_modules(box.env, wd), readonly_paths=box.readonly)
        except Exception as exc:
            err = ConversionError("sandbox_error", f"the conversion sandbox {sandbox.id!r} could not run: "
                                  f"{type(exc).__name__}: {exc}", Stage.READ, retryable=True)
            return None, err, "", -1, ()
        finally:
            done.set()
        captured = r.stdout + r.stderr
        rc = r.exit_code if r.exit_code is not None else -(r.signal or 0)
        if r.status is Status.SANDBOX_ERROR:
            err = ConversionError("sandbox_error", f"the conversion sandbox {sandbox.id!r} failed: "
                                  f"{r.error_code}: {r.error_message}", Stage.READ, retryable=True)
            return None, err, captured.decode("utf-8", "replace"), rc, r.enforced
        if r.exit_code == 0 and r.signal is None:
            output, error = read_outcome(wd, out_dir, converter.id, limits)
            return output, error, captured.decode("utf-8", "replace"), rc, r.enforced
        return None, _failure(r, converter.id, limits, captured), captured.decode("utf-8", "replace"), rc, r.enforced
    finally:
        done.set()
        _drop_root(root, ws)


def _failure(r: Any, conv_id: str, limits: Any, captured: bytes) -> ConversionError:
    from conveyor_sandbox.contract import Status

    st = r.status
    if st in (Status.TIME_LIMIT, Status.WALL_TIME_LIMIT):
        msg = f"converter {conv_id!r} exceeded its time limit of {limits.time_s:g}s and was killed"
    elif st is Status.MEMORY_LIMIT:
        msg = (f"converter {conv_id!r} ran out of memory (limit {limits.memory_mb} MB) and was killed "
               "(raise CONVEYOR_CAD_MEMORY_MB if the file is legitimately large)")
    elif st is Status.OUTPUT_LIMIT and r.signal == signal.SIGXFSZ:
        msg = f"converter {conv_id!r} wrote a file larger than {limits.output_mb} MiB and was killed"
    elif st is Status.SYSCALL_DENIED:
        msg = f"converter {conv_id!r} made a system call the conversion sandbox forbids and was killed (SIGSYS)"
    elif r.signal is not None:
        sig = signal.Signals(r.signal).name if r.signal in signal.Signals._value2member_map_ else str(r.signal)
        msg = f"converter {conv_id!r} died with {sig}: it crashed"
    else:
        msg = f"converter {conv_id!r} exited with status {r.exit_code} without a result"
        if b"MemoryError" in captured or b"std::bad_alloc" in captured:
            msg += f" (ran out of memory: limit {limits.memory_mb} MB)"
    return ConversionError("conversion_failed", msg, Stage.READ)


# ------------------------------------------------------------------ reading the outcome back


def read_outcome(wd: Path, out_dir: Path, conv_id: str,
                 limits: Any) -> tuple[ConvertOutput | None, ConversionError | None]:
    """Parse ``result.json`` and copy the files it names into ``out_dir``; nothing in it is trusted."""
    try:
        raw = _read(wd, RESULT_NAME, RESULT_MAX, conv_id, "its result")
        data = json.loads(raw)
    except ConversionError as err:
        return None, err
    except ValueError as exc:
        return None, ConversionError("conversion_failed", f"converter {conv_id!r} left an unreadable result: {exc}",
                                     Stage.WRITE)
    if not isinstance(data, dict) or data.get("kind") not in ("ok", "error"):
        return None, ConversionError("conversion_failed", f"converter {conv_id!r} left a malformed result",
                                     Stage.WRITE)
    if data["kind"] == "error":
        code = data.get("code")
        return None, ConversionError(code if isinstance(code, str) and _CODE.match(code) else "conversion_failed",
                                     _text(data.get("message"), 2000) or "the converter failed",
                                     _stage(data.get("stage")), retryable=data.get("retryable") is True)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        geometry = _copy_back(wd, data.get("geometry"), out_dir, "model", limits.output_mb * 1024 * 1024, conv_id,
                              "geometry")
        preview = _copy_back(wd, data.get("preview"), out_dir, "preview", PREVIEW_MAX, conv_id, "preview")
    except ConversionError as err:
        return None, err
    stage_errors = [{"stage": _stage(e.get("stage")).value, "code": _text(e.get("code"), 64) or "conversion_failed",
                     "message": _text(e.get("message"), 2000)}
                    for e in _list(data.get("stage_errors"))[:50] if isinstance(e, dict)]
    if preview is not None and not preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n":
        preview.unlink()
        preview = None
        stage_errors.append({"stage": "render", "code": "conversion_failed", "message": "the preview is not a PNG"})
    metadata: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    attributes: dict[str, Any] = data["attributes"] if isinstance(data.get("attributes"), dict) else {}
    warnings = tuple(_text(w, 2000) for w in _list(data.get("warnings"))[:200])
    return ConvertOutput(geometry, preview, metadata, attributes, warnings, tuple(stage_errors)), None


def _read(wd: Path, rel: str, limit: int, conv_id: str, what: str) -> bytes:
    from conveyor_sandbox.contract import SandboxArgumentError, safe_read

    try:
        data = safe_read(wd, rel, limit + 1)
    except FileNotFoundError:
        raise ConversionError("conversion_failed", f"converter {conv_id!r} named {what} {rel!r} but did not "
                              "write it", Stage.WRITE) from None
    except (PermissionError, SandboxArgumentError) as exc:
        raise ConversionError("conversion_failed", f"{what} of converter {conv_id!r} refused: {exc}",
                              Stage.WRITE) from None
    except OSError as exc:
        raise ConversionError("conversion_failed", f"reading {what} of converter {conv_id!r} failed: "
                              f"{os.strerror(exc.errno or errno.EIO)}", Stage.WRITE) from None
    if len(data) > limit:
        raise ConversionError("conversion_failed", f"{what} of converter {conv_id!r} is larger than {limit} bytes; "
                              "refused", Stage.WRITE)
    return data


def _copy_back(wd: Path, rel: Any, out_dir: Path, stem: str, limit: int, conv_id: str, what: str) -> Path | None:
    if rel is None:
        return None
    if not isinstance(rel, str) or not rel:
        raise ConversionError("conversion_failed", f"converter {conv_id!r} named a malformed {what} path",
                              Stage.WRITE)
    suffix = os.path.splitext(rel)[1].lower()
    dest = out_dir / (stem + (suffix if _SUFFIX.match(suffix) else ".bin"))
    dest.write_bytes(_read(wd, rel, limit, conv_id, f"the {what}"))
    return dest


def _stage(value: Any) -> Stage:
    try:
        return Stage(value)
    except ValueError:
        return Stage.READ


def _text(value: Any, limit: int) -> str:
    return (value if isinstance(value, str) else "" if value is None else str(value))[:limit]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
