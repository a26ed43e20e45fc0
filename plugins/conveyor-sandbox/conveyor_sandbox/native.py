"""The C sandbox backend: csrc/ through cffi, namespaces + cgroups + seccomp + rlimits."""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor_sandbox.common import (
    WorkdirOwnership,
    classify,
    file_at_limit,
    stdin_file,
    uid_pool,
    wait_status,
)
from conveyor_sandbox.contract import (
    Limits,
    RunResult,
    SandboxArgumentError,
    Status,
    check_argv,
    check_env,
    check_readonly_paths,
    check_workdir,
)
from conveyor_sandbox.metrics import measured
from conveyor_sandbox.workspace import is_bounded, used_bytes

HELPER_NAME = "conveyor-sandbox-helper"

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: enum sbx_stage → (error code, what was being done)
STAGES: dict[int, tuple[str, str]] = {
    1: ("cgroup_setup", "creating the run's cgroups"),
    2: ("spawn_failed", "starting the sandbox helper"),
    3: ("helper_failed", "starting the helper (bad arguments or missing binary)"),
    4: ("mount_setup", "building the box's filesystem (allow-list root, /dev, /proc, /tmp, work directory)"),
    5: ("cgroup_join", "moving the program into its cgroups"),
    6: ("rlimit_setup", "setting resource limits"),
    7: ("credentials", "switching to the box uid"),
    8: ("chdir_failed", "entering the work directory"),
    9: ("seccomp_setup", "installing the seccomp filter"),
    10: ("exec_failed", "executing the program"),
    11: ("fork_failed", "forking the program"),
    12: ("helper_lost", "supervising the helper (it died without a report)"),
    13: ("supervise_failed", "waiting for the box"),
}

MEM_SOURCES = {0: "none", 1: "cgroup_peak", 2: "cgroup_v1_max_usage", 3: "ru_maxrss"}


def helper_path() -> Path:
    """Where the helper executable is: $CONVEYOR_SANDBOX_HELPER, else beside this package."""
    env = os.environ.get("CONVEYOR_SANDBOX_HELPER")
    return Path(env) if env else Path(__file__).resolve().parent / HELPER_NAME


@dataclass(frozen=True)
class CgroupLayout:
    """The cgroup hierarchies this process may create run cgroups in."""

    v2_dir: str | None  # parent for run cgroups on the cgroup2 hierarchy
    v2_memory: bool  # memory controller delegated there
    v2_pids: bool
    v1_memory_dir: str | None
    v1_pids_dir: str | None

    def describe(self) -> dict[str, Any]:
        """Plain-JSON form for doctor."""
        return {
            "cgroup2": self.v2_dir,
            "cgroup2_memory": self.v2_memory,
            "cgroup2_pids": self.v2_pids,
            "v1_memory": self.v1_memory_dir,
            "v1_pids": self.v1_pids_dir,
        }


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3:
                continue
            out.append((fields[4], rfields[0], set(rfields[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if ctrls == "":
                own["<v2>"] = path
            for c in ctrls.split(","):
                own[c] = path
    return own


def _probe(parent: str) -> bool:
    probe = os.path.join(parent, f"conveyor-probe-{os.getpid()}-{threading.get_ident()}")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        os.rmdir(probe)
    except OSError:
        return False
    return True


def discover_cgroups() -> CgroupLayout:
    """Find where run cgroups can be made: a cgroup2 dir, v1 memory and pids dirs."""
    own = _own_cgroups()
    v2_dir = v1_mem = v1_pids = None
    v2_memory = v2_pids = False
    for mnt, fstype, opts in _mounts():
        if fstype == "cgroup2" and v2_dir is None and "<v2>" in own:
            d = os.path.normpath(mnt + own["<v2>"])
            if os.path.exists(os.path.join(d, "cgroup.procs")) and _probe(d):
                v2_dir = d
                try:
                    with open(os.path.join(d, "cgroup.subtree_control")) as f:
                        ctl = f.read().split()
                except OSError:
                    ctl = []
                v2_memory, v2_pids = "memory" in ctl, "pids" in ctl
        elif fstype == "cgroup":
            for ctrl in ("memory", "pids"):
                if ctrl in opts and ctrl in own:
                    d = os.path.normpath(mnt + own[ctrl])
                    if _probe(d):
                        if ctrl == "memory" and v1_mem is None:
                            v1_mem = d
                        elif ctrl == "pids" and v1_pids is None:
                            v1_pids = d
    if v2_memory:
        v1_mem = None
    if v2_pids:
        v1_pids = None
    return CgroupLayout(v2_dir, v2_memory, v2_pids, v1_mem, v1_pids)


_LAYOUT: CgroupLayout | None = None
_LAYOUT_LOCK = threading.Lock()


def cgroup_layout() -> CgroupLayout:
    """The cgroup layout, discovered once per process."""
    global _LAYOUT
    with _LAYOUT_LOCK:
        if _LAYOUT is None:
            _LAYOUT = discover_cgroups()
        return _LAYOUT


NO_CGROUPS = CgroupLayout(None, False, False, None, None)

#: boxes kept ready by the library's background thread
SPARES = int(os.environ.get("CONVEYOR_SANDBOX_SPARES", "2"))
_LIB_LOCK = threading.Lock()
_LIB: Any = None
_new_uncleared: Any = None


def _library() -> tuple[Any, Any]:
    """The compiled library, configured once per process (spares, flush at exit)."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            from conveyor_sandbox._csandbox import ffi, lib

            global _new_uncleared
            _new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
            lib.sbx_set_spares(SPARES)
            atexit.register(lib.sbx_flush, 1)
            _LIB = (ffi, lib)
            from conveyor_sandbox.sweep import sweep

            sweep()  # what boxes of dead workers on this host left: run cgroups, workspaces
        return _LIB


_DEVNULL = -1


def _devnull() -> int:
    """A process-wide read-only /dev/null descriptor, opened once."""
    global _DEVNULL
    with _LIB_LOCK:
        if _DEVNULL < 0:
            _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _DEVNULL


def flush(drop_spares: bool = True) -> None:
    """Wait until every finished box's cgroups and namespaces are gone.

    Runs hand their spent cgroups and namespaces to a background thread that removes
    them (or keeps the empty ones for later boxes) right after ``run()`` returns, and
    that thread keeps boxes ready for the next runs.  With ``drop_spares`` (the
    default) those and the kept ones are removed too, until the
    next run; call this where nothing may be left (it also runs at exit).  Without it,
    this waits until the thread is idle with the spares ready (benchmarks use that).
    """
    if _LIB is not None:
        _LIB[1].sbx_flush(int(drop_spares))


class CSandbox:
    """The C sandbox: namespaces, an allow-list root, seccomp, unprivileged uid, cgroups, rlimits."""

    id = "c-sandbox"
    priority = 100

    def __init__(self, *, use_cgroups: bool = True, helper: str | os.PathLike[str] | None = None) -> None:
        self.use_cgroups = use_cgroups and os.environ.get("CONVEYOR_SANDBOX_CGROUPS", "1") != "0"
        self._helper = Path(helper) if helper else None
        self._avail: tuple[bool, str] | None = None
        self._helper_resolved: Path | None = None

    @property
    def helper(self) -> Path:
        """The helper executable this backend starts."""
        if self._helper is not None:
            return self._helper
        if self._helper_resolved is None:
            self._helper_resolved = helper_path()
        return self._helper_resolved

    def layout(self) -> CgroupLayout:
        """The cgroups this backend will use (none when disabled)."""
        return cgroup_layout() if self.use_cgroups else NO_CGROUPS

    def available(self) -> tuple[bool, str]:
        """Root, the compiled extension, the helper and namespaces are needed."""
        if self._avail is None:
            self._avail = self._check()
        return self._avail

    def _check(self) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, "needs root (CAP_SYS_ADMIN) to create namespaces and switch to box uids"
        try:
            from conveyor_sandbox import _csandbox  # noqa: F401
        except ImportError as exc:
            return False, f"the C extension is not built ({exc}); reinstall with a C compiler present"
        if not os.access(self.helper, os.X_OK):
            return False, f"helper executable {self.helper} is missing; reinstall the package"
        for ns in ("pid", "mnt", "net", "ipc", "uts"):
            if not os.path.exists(f"/proc/self/ns/{ns}"):
                return False, f"the kernel has no {ns} namespaces"
        return True, "ok"

    @measured
    def run(
        self,
        argv: Sequence[str],
        *,
        limits: Limits | None = None,
        stdin: bytes | None = None,
        workdir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        readonly_paths: Iterable[str | os.PathLike[str]] = (),
    ) -> RunResult:
        """Run ``argv`` in a fresh box; never raises for the program's behaviour."""
        args = check_argv(argv)
        lim = limits or Limits()
        wd = check_workdir(workdir)
        environ = check_env(env, wd)
        ro = check_readonly_paths(readonly_paths)
        ok, why = self.available()
        if not ok:
            return RunResult(Status.SANDBOX_ERROR, self.id, error_code="sandbox_unavailable", error_message=why)
        pool = uid_pool()
        uid = pool.acquire()
        try:
            if stdin is None:  # one /dev/null for every run: the helper only reads it
                with WorkdirOwnership(wd, uid):
                    return self._run(args, lim, _devnull(), wd, environ, ro, uid)
            with stdin_file(stdin) as fin, WorkdirOwnership(wd, uid):
                return self._run(args, lim, fin.fileno(), wd, environ, ro, uid)
        finally:
            pool.release(uid)

    def _run(self, argv: list[str], lim: Limits, stdin_fd: int, wd: Path, environ: dict[str, str],
             ro: list[str], uid: int) -> RunResult:
        ffi, lib = _library()

        layout = self.layout()
        # parents: the library makes (or takes a prepared) fresh run cgroup under each
        cg_v2 = layout.v2_dir or ""
        cg_mem = layout.v1_memory_dir or ""
        cg_pids = layout.v1_pids_dir or ""
        mem_cg = bool((cg_v2 and layout.v2_memory) or cg_mem)
        cpu_watch = bool(cg_v2) and lim.cpu_ms is not None
        enforced = ["pid_namespace", "mount_namespace", "ipc_namespace", "uts_namespace"]
        flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
        if not lim.network:
            flags |= CLONE_NEWNET
            enforced.append("network_namespace")
        enforced += ["allowlist_root", "minimal_dev", "private_tmp", "bounded_tmp", "no_new_privs", "seccomp",
                     "unprivileged_uid"]
        bounded = is_bounded(wd)
        if bounded:
            enforced.append("bounded_workdir")
        if not lim.allow_exec:
            enforced.append("workdir_noexec")

        h = [str(self.helper), "-u", str(uid), "-w", str(wd), "-T", str(lim.tmp_kib * 1024),
             "-I", str(lim.tmp_inodes)]
        if lim.cpu_ms is not None:
            secs = -(-lim.cpu_ms // 1000)
            h += ["-t", str(secs + 1 if cpu_watch else secs)]
            enforced.append("rlimit_cpu")
            if cpu_watch:
                enforced.append("cgroup_cpu_watch")
        if lim.memory_kib is not None and not mem_cg:
            # without a memory cgroup, address space is the only memory bound left
            h += ["-m", str(lim.memory_kib * 1024)]
            enforced.append("rlimit_as")
        if lim.file_size_kib is not None:
            h += ["-f", str(lim.file_size_kib * 1024)]
            enforced.append("rlimit_fsize")
        h += ["-n", str(lim.pids), "-o", str(lim.open_files)]
        enforced += ["rlimit_nproc", "rlimit_nofile"]
        stack = lim.stack_kib or lim.memory_kib
        if stack is not None:
            h += ["-s", str(stack * 1024)]
            enforced.append("rlimit_stack")
        if lim.allow_exec:
            h.append("-x")
        if lim.socket_errno:
            h.append("-E")
        for p in ro:
            h += ["-r", p]
        h.append("--")
        h += argv
        if cg_mem:
            enforced.append("cgroup_v1_memory" if not layout.v2_memory else "cgroup_v2_memory")
        elif cg_v2 and layout.v2_memory:
            enforced.append("cgroup_v2_memory")
        if cg_pids:
            enforced.append("cgroup_v1_pids")
        elif cg_v2 and layout.v2_pids:
            enforced.append("cgroup_v2_pids")
        if cg_v2:
            enforced.append("cgroup_kill")
        enforced += ["wall_timer", "output_cap"]
        if lim.output_kill:
            enforced.append("output_kill")

        keep: list[Any] = []

        def cstr(s: str) -> Any:
            b = ffi.new("char[]", os.fsencode(s))
            keep.append(b)
            return b

        def carr(items: list[str]) -> Any:
            # one buffer for all the strings, and the pointers into it
            encoded = [os.fsencode(x) for x in items]
            blob = ffi.new("char[]", b"\0".join(encoded))
            arr = ffi.new("char *[]", len(items) + 1)
            at = 0
            for i, e in enumerate(encoded):
                arr[i] = blob + at
                at += len(e) + 1
            keep.append((blob, arr))
            return arr

        cap = lim.output_bytes
        cfg = ffi.new("struct sbx_config *")
        cfg.helper = cstr(h[0])
        cfg.argv = carr(h)
        cfg.envp = carr([f"{k}={v}" for k, v in environ.items()])
        cfg.stdin_fd = stdin_fd
        cfg.clone_flags = flags
        cfg.wall_ms = lim.effective_wall_ms
        cfg.cpu_ms = lim.cpu_ms or 0
        cfg.output_cap = cap
        out_buf = _new_uncleared("char[]", cap)  # only the first out_len bytes are read
        err_buf = _new_uncleared("char[]", cap)
        cfg.out_buf, cfg.err_buf = out_buf, err_buf
        cfg.cg_v2 = cstr(cg_v2)
        cfg.cg_v2_memory = int(layout.v2_memory)
        cfg.cg_v2_pids = int(layout.v2_pids)
        cfg.cg_v1_memory = cstr(cg_mem)
        cfg.cg_v1_pids = cstr(cg_pids)
        cfg.memory_limit = (lim.memory_kib or 0) * 1024
        cfg.pids_limit = lim.pids
        cfg.output_kill = int(lim.output_kill)
        res = ffi.new("struct sbx_result *")
        wd_used = used_bytes(wd) if bounded else 0
        if lib.sbx_run(cfg, res) != 0:
            raise SandboxArgumentError("the C sandbox rejected its configuration")

        stdout = bytes(ffi.buffer(out_buf, min(res.out_len, cap)))
        stderr = bytes(ffi.buffer(err_buf, min(res.err_len, cap)))
        common: dict[str, Any] = {
            "backend": self.id,
            "cpu_ms": int(res.cpu_us // 1000),
            "wall_ms": int(res.wall_us // 1000),
            "memory_kib": int(res.peak_bytes // 1024) if res.mem_source else None,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_len": int(res.out_len),
            "stderr_len": int(res.err_len),
            "stdout_truncated": res.out_len > cap,
            "stderr_truncated": res.err_len > cap,
            "memory_source": MEM_SOURCES.get(res.mem_source, "none"),
            "time_source": "cgroup_cpu_stat" if res.cpu_from_cgroup else "rusage",
            "enforced": tuple(enforced),
            "oom_killed": bool(res.oom_killed),
        }
        if res.stage:
            code, doing = STAGES.get(res.stage, ("sandbox_error", "running the box"))
            msg = f"{doing} failed: {os.strerror(res.err) if res.err else 'no report'}"
            if res.stage == 10:
                msg = f"executing {argv[0]!r} failed: {os.strerror(res.err)}"
            return RunResult(Status.SANDBOX_ERROR, error_code=code, error_message=msg, **common)
        exit_code, sig = wait_status(res.wstatus) if res.have_status else (None, None)
        # a program that ignores SIGXFSZ (Python does) gets EFBIG instead of dying: its file at the limit says so
        file_over = (lim.file_size_kib is not None and exit_code is not None and
                     file_at_limit(wd, lim.file_size_kib * 1024))
        status = classify(
            limits=lim,
            exit_code=exit_code,
            signal=sig,
            cpu_ms=common["cpu_ms"],
            killed_wall=bool(res.killed_wall),
            killed_cpu=bool(res.killed_cpu),
            oom_killed=bool(res.oom_killed),
            output_over=res.out_len > cap or res.err_len > cap or file_over,
            disk_full=bool(res.disk_full),
            disk_bytes=int(res.tmp_bytes) + (max(0, used_bytes(wd) - wd_used) if bounded else 0),
        )
        return RunResult(status, exit_code=exit_code, signal=sig, **common)
