"""Backend-neutral contract tests every sandbox backend must pass.

Subclass ``SandboxContract`` in a test module and provide a ``sandbox`` fixture returning
the backend; every test here then runs against it. Only /bin/sh and coreutils are used.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conveyor_sandbox.contract import Limits, RunResult, Sandbox, SandboxArgumentError, Status

FAST = Limits(cpu_ms=1000, wall_ms=2000, memory_kib=128 * 1024)


def processes_with(token: str) -> list[int]:
    """Pids whose command line contains ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def wait_gone(token: str, timeout: float = 2.0) -> list[int]:
    """Wait for processes carrying ``token`` to disappear; returns those still there."""
    deadline = time.monotonic() + timeout
    left = processes_with(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = processes_with(token)
    return left


class SandboxContract:
    """What any sandbox backend must do; subclasses provide the ``sandbox`` fixture."""

    @pytest.fixture
    def sandbox(self) -> Sandbox:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `sandbox` fixture returning the backend")

    @pytest.fixture
    def workdir(self, tmp_path: Path) -> Path:
        d = tmp_path / "box"
        d.mkdir()
        return d

    def run(self, sandbox: Sandbox, workdir: Path, argv: list[str], **kw: Any) -> RunResult:
        kw.setdefault("limits", FAST)
        return sandbox.run(argv, workdir=workdir, **kw)

    def test_is_a_sandbox(self, sandbox: Sandbox) -> None:
        assert isinstance(sandbox, Sandbox)
        ok, why = sandbox.available()
        assert ok, why

    def test_ok_with_output(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "echo out; echo err >&2"])
        assert r.status is Status.OK and r.ok
        assert (r.exit_code, r.signal) == (0, None)
        assert (r.stdout, r.stderr) == (b"out\n", b"err\n")
        assert (r.stdout_len, r.stderr_len) == (4, 4)
        assert not r.stdout_truncated and not r.stderr_truncated
        assert r.backend == sandbox.id
        assert r.enforced and r.time_source != "none"

    def test_exit_code_is_runtime_error(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "exit 3"])
        assert r.status is Status.RUNTIME_ERROR
        assert r.exit_code == 3 and r.signal is None

    def test_stdin_and_env(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", 'cat; printf "%s" "$GREETING"'],
                     stdin=b"in\n", env={"PATH": "/usr/bin:/bin", "GREETING": "hello"})
        assert r.status is Status.OK, r
        assert r.stdout == b"in\nhello"

    def test_workdir_is_writable(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "echo data > out.txt && cat out.txt"])
        assert r.status is Status.OK, r
        assert (workdir / "out.txt").read_bytes() == b"data\n"

    def test_signal(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "kill -SEGV $$"])
        assert r.status is Status.SIGNALLED
        assert r.signal == 11 and r.exit_code is None

    def test_cpu_limit(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "while :; do :; done"],
                     limits=Limits(cpu_ms=300, wall_ms=5000))
        assert r.status is Status.TIME_LIMIT, r
        assert r.cpu_ms >= 300

    def test_wall_limit(self, sandbox: Sandbox, workdir: Path) -> None:
        t0 = time.monotonic()
        r = self.run(sandbox, workdir, ["/bin/sleep", "60"], limits=Limits(cpu_ms=1000, wall_ms=300))
        assert r.status is Status.WALL_TIME_LIMIT, r
        assert time.monotonic() - t0 < 3
        assert 250 <= r.wall_ms < 2000

    def test_output_cap(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "head -c 1000000 /dev/zero"],
                     limits=Limits(cpu_ms=2000, output_bytes=1000))
        assert r.status is Status.OUTPUT_LIMIT, r
        assert r.stdout_truncated and len(r.stdout) == 1000 and 1000 < r.stdout_len <= 1000000

    def test_output_flood_is_killed_at_the_cap(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "yes flood"], limits=Limits(cpu_ms=5000, output_bytes=1000))
        assert r.status is Status.OUTPUT_LIMIT and r.cpu_ms < 500, r

    def test_output_past_the_cap_is_counted_when_not_killed(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", "head -c 1000000 /dev/zero"],
                     limits=Limits(cpu_ms=2000, output_bytes=1000, output_kill=False))
        assert r.status is Status.OUTPUT_LIMIT, r
        assert r.stdout_truncated and len(r.stdout) == 1000 and r.stdout_len == 1000000

    def test_background_process_does_not_outlive_the_run(self, sandbox: Sandbox, workdir: Path) -> None:
        token = f"{1000 + uuid.uuid4().int % 100000}.{uuid.uuid4().int % 1000:03d}"
        r = self.run(sandbox, workdir, ["/bin/sh", "-c", f"setsid /bin/sleep {token} >/dev/null 2>&1 & echo started"])
        assert r.stdout == b"started\n"
        assert r.status in (Status.OK, Status.WALL_TIME_LIMIT), r
        assert wait_gone(token) == []

    def test_missing_program_is_sandbox_error(self, sandbox: Sandbox, workdir: Path) -> None:
        r = self.run(sandbox, workdir, ["/nonexistent/program"])
        assert r.status is Status.SANDBOX_ERROR
        assert r.error_code and r.error_message and "nonexistent" in r.error_message

    @pytest.mark.parametrize("bad", [[], "ls", [1], ["a\0b"]])
    def test_bad_argv(self, sandbox: Sandbox, workdir: Path, bad: Any) -> None:
        with pytest.raises(SandboxArgumentError):
            sandbox.run(bad, workdir=workdir, limits=FAST)

    def test_bad_workdir(self, sandbox: Sandbox, tmp_path: Path) -> None:
        with pytest.raises(SandboxArgumentError):
            sandbox.run(["/bin/true"], workdir=tmp_path / "missing", limits=FAST)
        (tmp_path / "link").symlink_to(tmp_path)
        with pytest.raises(SandboxArgumentError):
            sandbox.run(["/bin/true"], workdir=tmp_path / "link", limits=FAST)

    def test_bad_limits(self) -> None:
        with pytest.raises(SandboxArgumentError):
            Limits(cpu_ms=-1)
        with pytest.raises(SandboxArgumentError):
            Limits(cpu_ms=None, wall_ms=None)
        with pytest.raises(SandboxArgumentError):
            Limits(output_bytes=0)

    def test_result_is_json(self, sandbox: Sandbox, workdir: Path) -> None:
        import json

        r = self.run(sandbox, workdir, ["/bin/echo", "x"])
        d = json.loads(json.dumps(r.as_dict()))
        assert d["status"] == "ok" and d["stdout"] == "x\n" and d["backend"] == sandbox.id
