"""The pure-Python fallback sandbox: subprocess + rlimits + process-group kill, no namespaces.

Clearly weaker than the C sandbox: the program sees the real filesystem (guarded only by
its uid when the caller is root), the network, and other processes; a program that
leaves its process group escapes the group kill (as root, every process of the box uid
is killed too). It is chosen only when the C sandbox cannot load.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    Status,
    check_argv,
    check_env,
    check_readonly_paths,
    check_workdir,
)
from conveyor_sandbox.metrics import measured


def _kill_uid(uid: int) -> int:
    """SIGKILL every process owned by ``uid``; returns how many were signalled."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                os.kill(int(entry), signal.SIGKILL)
                n += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return n


class PythonSandbox:
    """Fallback backend: rlimits, a wall timer, process-group (and box-uid) kill."""

    id = "python-fallback"
    priority = 10

    def available(self) -> tuple[bool, str]:
        """Always usable on Linux; weaker than the C sandbox."""
        if not hasattr(os, "wait4"):
            return False, "needs a POSIX system"
        return True, "ok (weak: no namespaces, no seccomp, no cgroups)"

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
        """Run ``argv`` under rlimits in its own process group."""
        args = check_argv(argv)
        lim = limits or Limits()
        wd = check_workdir(workdir)
        environ = check_env(env, wd)
        check_readonly_paths(readonly_paths)
        root = os.geteuid() == 0
        uid = uid_pool().acquire() if root else None
        try:
            with stdin_file(stdin) as fin:
                if uid is None:
                    return self._run(args, lim, fin, str(wd), environ, None)
                with WorkdirOwnership(wd, uid):
                    return self._run(args, lim, fin, str(wd), environ, uid)
        finally:
            if uid is not None:
                uid_pool().release(uid)

    def _run(self, argv: list[str], lim: Limits, fin: Any, wd: str, environ: dict[str, str],
             uid: int | None) -> RunResult:
        enforced = ["process_group", "wall_timer", "output_cap"] + (["output_kill"] if lim.output_kill else [])
        rl: list[tuple[str, int, int]] = []
        if lim.cpu_ms is not None:
            secs = -(-lim.cpu_ms // 1000)
            rl.append(("cpu", secs, secs + 1))
            enforced.append("rlimit_cpu")
        if lim.memory_kib is not None:
            rl.append(("as", lim.memory_kib * 1024, lim.memory_kib * 1024))
            enforced.append("rlimit_as")
        if lim.file_size_kib is not None:
            rl.append(("fsize", lim.file_size_kib * 1024, lim.file_size_kib * 1024))
            enforced.append("rlimit_fsize")
        rl.append(("nofile", lim.open_files, lim.open_files))
        rl.append(("core", 0, 0))
        if uid is not None:
            rl.append(("nproc", lim.pids, lim.pids))
            enforced += ["unprivileged_uid", "rlimit_nproc", "uid_kill"]
        prlimit = shutil.which("prlimit")
        preexec: Callable[[], None] | None = None
        # ru_maxrss starts at the caller's own RSS across vfork/fork + exec: a floor, not a figure
        memory_source = "ru_maxrss_inherited"
        if prlimit:
            # an exec'd wrapper lets subprocess vfork instead of forking the whole caller
            cmd = [prlimit] + [f"--{name}={soft}:{hard}" for name, soft, hard in rl] + ["--", *argv]
        else:
            cmd = list(argv)
            names = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE,
                     "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE, "nproc": resource.RLIMIT_NPROC}

            def preexec() -> None:
                for name, soft, hard in rl:
                    resource.setrlimit(names[name], (soft, hard))
        cap = lim.output_bytes
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd, stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=wd, env=environ,
                process_group=0, preexec_fn=preexec,
                user=uid, group=uid, extra_groups=[] if uid is not None else None,
            )
        except OSError as exc:
            return RunResult(Status.SANDBOX_ERROR, self.id, error_code="exec_failed",
                             error_message=f"executing {argv[0]!r} failed: {exc.strerror}", enforced=tuple(enforced))
        bufs = {"out": bytearray(), "err": bytearray()}
        lens = {"out": 0, "err": 0}
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        for key, f in (("out", proc.stdout), ("err", proc.stderr)):
            os.set_blocking(f.fileno(), False)
            sel.register(f.fileno(), selectors.EVENT_READ, key)
        deadline = t0 + lim.effective_wall_ms / 1000
        killed_wall = killed_output = False
        wstatus, ru = None, None
        open_fds = 2
        while True:
            if wstatus is None:
                pid, st, r = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    wstatus, ru = st, r
                    self._kill(proc.pid, uid)
                    proc.returncode = 0  # reaped here; keep Popen from waiting again
            if wstatus is not None and open_fds == 0:
                break
            now = time.monotonic()
            if wstatus is None and now >= deadline:
                killed_wall = True
                self._kill(proc.pid, uid)
                deadline = float("inf")
            timeout = 0.01 if wstatus is None else 0.2
            events = sel.select(min(timeout, max(0.0, deadline - now)))
            if not events and wstatus is not None:
                break  # writers outside the group keep pipes open: stop waiting for them
            for ready, _ in events:
                try:
                    chunk = os.read(ready.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(ready.fd)
                    open_fds -= 1
                    continue
                name = ready.data
                lens[name] += len(chunk)
                room = cap - len(bufs[name])
                if room > 0:
                    bufs[name] += chunk[:room]
                if lim.output_kill and lens[name] > cap and wstatus is None and not killed_output:
                    killed_output = True  # a flood ends at the cap, not at the cpu limit
                    self._kill(proc.pid, uid)
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        self._kill(proc.pid, uid)
        wall_ms = int((time.monotonic() - t0) * 1000)
        assert wstatus is not None and ru is not None
        exit_code, sig = wait_status(wstatus)
        if prlimit and exit_code in (126, 127) and not bufs["out"] and b"prlimit" in bytes(bufs["err"]):
            return RunResult(Status.SANDBOX_ERROR, self.id, error_code="exec_failed",
                             error_message=bytes(bufs["err"]).decode("utf-8", "replace").strip(),
                             enforced=tuple(enforced))
        cpu_ms = int((ru.ru_utime + ru.ru_stime) * 1000)
        status = classify(limits=lim, exit_code=exit_code, signal=sig, cpu_ms=cpu_ms, killed_wall=killed_wall,
                          killed_cpu=False, oom_killed=False,
                          output_over=lens["out"] > cap or lens["err"] > cap or (
                              lim.file_size_kib is not None and file_at_limit(wd, lim.file_size_kib * 1024)))
        return RunResult(
            status, self.id, exit_code=exit_code, signal=sig, cpu_ms=cpu_ms, wall_ms=wall_ms,
            memory_kib=int(ru.ru_maxrss), stdout=bytes(bufs["out"]), stderr=bytes(bufs["err"]),
            stdout_len=lens["out"], stderr_len=lens["err"], stdout_truncated=lens["out"] > cap,
            stderr_truncated=lens["err"] > cap, memory_source=memory_source, time_source="rusage",
            enforced=tuple(enforced),
        )

    @staticmethod
    def _kill(pgid: int, uid: int | None) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if uid is not None:
            for _ in range(50):
                if not _kill_uid(uid):
                    break
                time.sleep(0.002)
