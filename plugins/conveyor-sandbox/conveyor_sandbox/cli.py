"""``conveyor sandbox run`` and ``conveyor sandbox doctor``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from conveyor_sandbox.contract import (
    Limits,
    RunResult,
    SandboxArgumentError,
    SandboxUnavailable,
    Status,
    choose_sandbox,
)
from conveyor_sandbox.hookspecs import SANDBOXES
from conveyor_sandbox.workspace import open_workspace

PY = "/usr/bin/python3"
TIME = {Status.TIME_LIMIT, Status.WALL_TIME_LIMIT}
DENIED = {Status.SYSCALL_DENIED}

#: attack name → (extra args, statuses that mean "contained", stdout prefix or None)
ATTACKS: dict[str, tuple[list[str], set[Status], bytes | None]] = {
    "busy": ([], {Status.TIME_LIMIT}, None),
    "sleep_forever": ([], {Status.WALL_TIME_LIMIT}, None),
    "sigstop": ([], {Status.WALL_TIME_LIMIT}, None),
    "catch_sigxcpu": ([], {Status.TIME_LIMIT}, None),
    "memory_touch": (["1024"], {Status.MEMORY_LIMIT}, None),
    "big_reservation": ([], {Status.OK}, b"reserved"),
    "fork_bomb": ([], TIME | {Status.MEMORY_LIMIT}, None),
    "daemon": ([], {Status.OK}, b"parent leaving"),
    "flood": (["1"], {Status.OUTPUT_LIMIT}, None),
    "sparse_file": ([], {Status.OUTPUT_LIMIT, Status.RUNTIME_ERROR}, b""),
    "connect": ([], DENIED, b""),
    "read_shadow": ([], {Status.OK}, b"BLOCKED"),
    "write_outside": ([], {Status.OK}, b"BLOCKED"),
    "exec_written": ([], {Status.OK}, b"BLOCKED"),
    "symlink": ([], {Status.OK}, b"planted"),
    "ptrace": ([], DENIED, b""),
    "kill_parent": ([], {Status.OK}, b"BLOCKED"),
    "clone3": ([], {Status.OK}, b"BLOCKED"),
    "io_uring": ([], DENIED, b""),
    "keyctl": ([], DENIED, b""),
    "int80": ([], DENIED, b""),
    "segfault": ([], {Status.SIGNALLED}, None),
    "abort": ([], {Status.SIGNALLED}, None),
    "exit3": ([], {Status.RUNTIME_ERROR}, None),
    "threads": ([], {Status.OK}, b"sum"),
}


def _backends(backend: str | None) -> Any:
    from conveyor.plugin_api import get_plugins

    try:
        return choose_sandbox(get_plugins().registry(SANDBOXES), prefer=backend)
    except SandboxUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@click.group("sandbox")
def sandbox() -> None:
    """Run programs in the sandbox and check what this host can enforce."""


@sandbox.command("run", context_settings={"ignore_unknown_options": False})
@click.option("--time-limit", "time_limit", type=click.IntRange(min=1), default=2000, show_default=True,
              help="CPU time limit, ms.")
@click.option("--wall-limit", "wall_limit", type=click.IntRange(min=1), default=None,
              help="Wall-clock limit, ms (default 2 x time limit + 1000).")
@click.option("--memory-limit", "memory_limit", type=click.IntRange(min=1), default=256, show_default=True,
              help="Memory limit, MiB.")
@click.option("--output-limit", "output_limit", type=click.IntRange(min=1), default=64, show_default=True,
              help="Bytes kept of each of stdout and stderr, KiB.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work directory (default: a fresh bounded workspace, removed after).")
@click.option("--readonly", "readonly", multiple=True, type=click.Path(exists=True), help="Extra read-only path.")
@click.option("--allow-exec", is_flag=True, help="Let the program execute files in its work directory.")
@click.option("--backend", default=None, help="Sandbox backend id (default: the best available).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.argument("cmd", nargs=-1, required=True)
def run_cmd(time_limit: int, wall_limit: int | None, memory_limit: int, output_limit: int, workdir: Path | None,
            readonly: tuple[str, ...], allow_exec: bool, backend: str | None, as_json: bool,
            cmd: tuple[str, ...]) -> None:
    """Run CMD in a fresh box: conveyor sandbox run [OPTIONS] -- CMD..."""
    try:
        limits = Limits(cpu_ms=time_limit, wall_ms=wall_limit, memory_kib=memory_limit * 1024,
                        output_bytes=output_limit * 1024, allow_exec=allow_exec)
    except SandboxArgumentError as exc:
        raise click.UsageError(str(exc)) from None
    sb = _backends(backend)
    ws = None
    if workdir is None:
        ws = open_workspace()
        workdir = ws.path
    elif not workdir.is_dir():
        raise click.BadParameter(f"{workdir} is not a directory", param_hint="--workdir")
    try:
        r = sb.run(list(cmd), limits=limits, workdir=workdir, readonly_paths=list(readonly))
    except SandboxArgumentError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        if ws:
            ws.close()
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
    else:
        sys.stdout.buffer.write(r.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(r.stderr)
        click.echo(_summary(r), err=True)
    sys.exit(0 if r.ok else (2 if r.status is Status.SANDBOX_ERROR else 1))


def _summary(r: RunResult) -> str:
    parts = [f"status={r.status.value}", f"backend={r.backend}"]
    if r.exit_code is not None:
        parts.append(f"exit={r.exit_code}")
    if r.signal is not None:
        parts.append(f"signal={r.signal}")
    parts += [f"cpu={r.cpu_ms}ms({r.time_source})", f"wall={r.wall_ms}ms",
              f"memory={r.memory_kib}KiB({r.memory_source})"]
    if r.stdout_truncated or r.stderr_truncated:
        parts.append(f"stdout_len={r.stdout_len} stderr_len={r.stderr_len}")
    if r.error_code:
        parts.append(f"error={r.error_code}: {r.error_message}")
    return "[sandbox] " + " ".join(parts)


def kernel_report() -> dict[str, Any]:
    """What this kernel and host offer the sandbox."""
    from conveyor_sandbox.native import cgroup_layout

    rep: dict[str, Any] = {"euid": os.geteuid(), "kernel": os.uname().release}
    kinds = ("pid", "mnt", "net", "ipc", "uts", "user", "cgroup")
    rep["namespaces"] = {ns: os.path.exists(f"/proc/self/ns/{ns}") for ns in kinds}
    try:
        rep["max_user_namespaces"] = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except OSError:
        rep["max_user_namespaces"] = None
    try:
        rep["seccomp_actions"] = Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError:
        rep["seccomp_actions"] = []
    layout = cgroup_layout()
    rep["cgroups"] = layout.describe()
    rep["cgroup_mounts"] = sorted({line.split()[4] + " (" + line.split(" - ")[1].split()[0] + ")"
                                   for line in Path("/proc/self/mountinfo").read_text().splitlines()
                                   if " - cgroup" in line})
    has_kill = has_peak = False
    if layout.v2_dir:
        probe = os.path.join(layout.v2_dir, f"conveyor-doctor-{os.getpid()}")
        try:
            os.mkdir(probe)
            has_kill = os.path.exists(os.path.join(probe, "cgroup.kill"))
            has_peak = os.path.exists(os.path.join(probe, "memory.peak"))
        except OSError:
            pass
        finally:
            if os.path.isdir(probe):
                os.rmdir(probe)
    rep["cgroup_kill"] = has_kill
    rep["memory_peak"] = has_peak
    rep["memory_source"] = ("cgroup_peak" if layout.v2_memory else "cgroup_v1_max_usage" if layout.v1_memory_dir
                            else "ru_maxrss")
    rep["time_source"] = "cgroup_cpu_stat" if layout.v2_dir else "rusage"
    return rep


BOX_VIEW = r"""
import json, os
def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError as e:
        return ["<" + e.strerror + ">"]
mounts = []
for line in open("/proc/self/mountinfo"):
    left, _, right = line.partition(" - ")
    f = left.split()
    mounts.append({"path": f[4], "options": f[5], "fs": right.split()[0]})
print(json.dumps({"/": ls("/"), "/etc": ls("/etc"), "/dev": ls("/dev"), "mounts": mounts}))
"""


def box_view(sb: Any) -> dict[str, Any]:
    """What a program in a box of this backend sees: the root, /etc, /dev and every mount."""
    if not os.path.exists(PY):
        return {"error": f"{PY} is needed to look inside a box"}
    with open_workspace(size_kib=1024, inodes=64) as ws:
        r = sb.run([PY, "-I", "-c", BOX_VIEW], limits=Limits(cpu_ms=2000), workdir=ws.path)
    if not r.ok:
        return {"error": f"{r.status.value}: {r.error_message or r.stderr.decode('utf-8', 'replace')[-300:]}"}
    view: dict[str, Any] = json.loads(r.stdout)
    view["workdir_bounded"] = ws.bounded
    return view


def attack_sources() -> Path | None:
    """The attack programs' sources: $CONVEYOR_SANDBOX_ATTACKS or the tests of the checkout this runs from."""
    env = os.environ.get("CONVEYOR_SANDBOX_ATTACKS")
    candidates = [Path(env)] if env else []
    # plugins/conveyor-sandbox/conveyor_sandbox/cli.py in a checkout: the repository is three folders up
    candidates += [p / "tests" / "sandbox" / "programs" for p in Path(__file__).resolve().parents[1:4]]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.c")):
            return c
    return None


def run_attacks(sb: Any, src: Path) -> list[dict[str, Any]]:
    """Compile and run every attack in C (and Python where there is one); one row each."""
    rows = []
    cc = shutil.which("cc") or shutil.which("gcc")
    limits = Limits(cpu_ms=500, wall_ms=1000, memory_kib=64 * 1024)
    with tempfile.TemporaryDirectory(prefix="conveyor-doctor-") as tmp:
        bindir = Path(tmp) / "bin"
        bindir.mkdir()
        bindir.chmod(0o755)
        Path(tmp).chmod(0o755)
        for name, (args, expected, prefix) in ATTACKS.items():
            progs: list[tuple[str, list[str], list[str]]] = []
            if cc and (src / f"{name}.c").exists():
                out = bindir / name
                cp = subprocess.run([cc, "-O1", "-pthread", "-o", str(out), str(src / f"{name}.c")],
                                    capture_output=True, check=False)
                if cp.returncode == 0:
                    progs.append(("c", [str(out), *args], [str(bindir)]))
            if os.path.exists(PY) and (src / "py" / f"{name}.py").exists():
                progs.append(("python", [PY, "-I", str(src / "py" / f"{name}.py"), *args], [str(src / "py")]))
            for lang, argv, ro in progs:
                wd = Path(tempfile.mkdtemp(dir=tmp))
                # an attack that must end on cpu time gets wall room to use it on a loaded host
                lim = limits if Status.WALL_TIME_LIMIT in expected else replace(limits, wall_ms=10_000)
                r = sb.run(argv, limits=lim, workdir=wd, readonly_paths=ro)
                ok = r.status in expected and b"ESCAPED" not in r.stdout
                if ok and prefix is not None and r.status is Status.OK:
                    ok = r.stdout.startswith(prefix)
                if name == "sparse_file" and lang == "c":
                    ok = ok and r.status is Status.OUTPUT_LIMIT
                rows.append({"attack": name, "lang": lang, "status": r.status.value, "contained": ok,
                             "expected": sorted(s.value for s in expected)})
    return rows


@sandbox.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def sweep_cmd(as_json: bool) -> None:
    """Remove run cgroups (killing what is left in them) and workspaces of processes that are gone."""
    from conveyor_sandbox.sweep import sweep

    report = sweep()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for cg in report.cgroups:
            click.echo(f"removed run cgroup {cg}")
        for ws in report.workspaces:
            click.echo(f"removed workspace {ws}")
        if report.processes:
            click.echo(f"killed {len(report.processes)} leftover box process(es)")
        for f in report.failed:
            click.echo(f"could not remove {f}", err=True)
        if not report.removed and not report.failed:
            click.echo("nothing to sweep")
    sys.exit(1 if report.failed else 0)


@sandbox.command("doctor")
@click.option("--backend", default=None, help="Sandbox backend id (default: the best available).")
@click.option("--no-attacks", is_flag=True, help="Only report kernel capabilities.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_cmd(backend: str | None, no_attacks: bool, as_json: bool) -> None:
    """What this kernel offers the sandbox, then every attack program run against it."""
    from conveyor.plugin_api import get_plugins

    report: dict[str, Any] = {"kernel": kernel_report(), "backends": {}}
    for b in get_plugins().registry(SANDBOXES):
        ok, why = b.available()
        report["backends"][b.id] = {"available": ok, "detail": why}
    sb = _backends(backend)
    report["chosen"] = sb.id
    report["box_view"] = box_view(sb)
    rows: list[dict[str, Any]] = []
    if not no_attacks:
        src = attack_sources()
        if src is None:
            report["attacks_skipped"] = "attack sources not found (set CONVEYOR_SANDBOX_ATTACKS)"
        else:
            rows = run_attacks(sb, src)
    report["attacks"] = rows
    failed = [r for r in rows if not r["contained"]]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        k = report["kernel"]
        click.echo(f"kernel {k['kernel']}  euid {k['euid']}")
        click.echo("namespaces: " + ", ".join(f"{n}={'yes' if v else 'no'}" for n, v in k["namespaces"].items()))
        click.echo(f"user namespaces allowed: {k['max_user_namespaces']}")
        click.echo("seccomp actions: " + (" ".join(k["seccomp_actions"]) or "none"))
        click.echo("cgroup mounts: " + "; ".join(k["cgroup_mounts"]))
        for key, val in k["cgroups"].items():
            click.echo(f"  {key}: {val}")
        yn = {True: "yes", False: "no"}
        click.echo(f"cgroup.kill: {yn[k['cgroup_kill']]}   memory.peak: {yn[k['memory_peak']]}")
        click.echo(f"memory figures from: {k['memory_source']}   cpu figures from: {k['time_source']}")
        for bid, info in report["backends"].items():
            click.echo(f"backend {bid}: {'available' if info['available'] else 'unavailable'} ({info['detail']})")
        click.echo(f"chosen backend: {sb.id}")
        view = report["box_view"]
        if "error" in view:
            click.echo(f"box view: could not look inside a box ({view['error']})")
        else:
            click.echo("what a box sees:")
            for key in ("/", "/etc", "/dev"):
                click.echo(f"  {key:<5} " + " ".join(view[key]))
            for m in view["mounts"]:
                click.echo(f"  mount {m['path']:<28} {m['fs']:<8} {m['options']}")
            click.echo(f"  work directory bounded (own tmpfs): {yn[view['workdir_bounded']]}")
        if "attacks_skipped" in report:
            click.echo(report["attacks_skipped"])
        for r in rows:
            mark = "ok  " if r["contained"] else "FAIL"
            click.echo(f"{mark} {r['attack']:<16} {r['lang']:<7} {r['status']}")
        if rows:
            click.echo(f"{len(rows) - len(failed)} contained, {len(failed)} not contained")
    sys.exit(1 if failed else 0)
