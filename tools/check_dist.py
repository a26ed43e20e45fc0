"""Build every distribution's sdist, then its wheel from it; install and run them from fresh venvs.

    python tools/check_dist.py WORKDIR

What a user of a package index gets: wheels built from the sdists alone (so each sdist
carries everything its build needs: the C sandbox's sources, the schema migrations, the
judge's programs, the CAD samples), installed with nothing from the checkout on the path.

1. The core, ``conveyor-jobs``, alone from its sdist with no C compiler (``CC=false``): it
   is pure Python. The smoke run upgrades a SQLite database, submits a job, works it off
   with ``conveyor run --burst`` and lists the plugins (only ``builtin``).
2. All four wheels (core, sandbox, judge, CAD) into another fresh venv: the same run, then
   a program in a C sandbox box, and every plugin loads.

Exits non-zero, naming the step, on any failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: distribution → (source directory, top-level package)
DISTRIBUTIONS = {
    "conveyor_jobs": (ROOT, "conveyor"),
    "conveyor_sandbox": (ROOT / "plugins" / "conveyor-sandbox", "conveyor_sandbox"),
    "conveyor_judge": (ROOT / "plugins" / "conveyor-judge", "conveyor_judge"),
    "conveyor_cad": (ROOT / "plugins" / "conveyor-cad", "conveyor_cad"),
}


def run(step: str, cmd: list[str], **kw: object) -> str:
    print(f"== {step}: {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        sys.exit(f"{step} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return str(r.stdout)


def fresh_venv(path: Path) -> Path:
    """A new venv at ``path``; its python."""
    venv.create(path, with_pip=True, clear=True)
    return path / "bin" / "python"


def build_all(dist: Path) -> dict[str, tuple[Path, Path]]:
    """Each distribution's sdist and the wheel built from it."""
    built: dict[str, tuple[Path, Path]] = {}
    for name, (src, _pkg) in DISTRIBUTIONS.items():
        out = dist / name
        run(f"build {name}: the sdist, then the wheel from it",
            [sys.executable, "-m", "build", "--outdir", str(out), str(src)])
        wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
        assert len(wheels) == 1 and len(sdists) == 1, (name, wheels, sdists)
        assert wheels[0].name.startswith(name + "-"), wheels[0].name
        built[name] = (sdists[0], wheels[0])
    return built


def deployment_env(here: Path) -> dict[str, str]:
    """The environment of a scratch SQLite deployment in ``here``, nothing of the caller's ``CONVEYOR_*``."""
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({"CONVEYOR_DB_URL": f"sqlite:///{here}/conveyor.db", "CONVEYOR_QUEUE_URL": "sql",
                "CONVEYOR_STORAGE_URL": f"file://{here}/data", "CONVEYOR_CONFIG": "", "PYTHONPATH": ""})
    return env


def smoke_job(env_dir: Path, here: Path, env: dict[str, str], *, cad: bool) -> None:
    """Upgrade the database (with ``cad``, the CAD plugin's history too), submit an echo job, work it off."""
    cli = [str(env_dir / "bin" / "conveyor")]
    out = run("conveyor db upgrade", [*cli, "db", "upgrade"], env=env, cwd=here)
    assert out.startswith("applied jobs 0001"), out
    assert (", cad cad0001 (" in out) == cad, out  # the plugin's migrations ship as package data
    run("conveyor db status", [*cli, "db", "status"], env=env, cwd=here)
    job = run("conveyor submit", [*cli, "submit", "conveyor.echo", "--payload", '{"from": "the wheel"}'],
              env=env, cwd=here).strip().split()[-1]
    run("conveyor run --burst", [*cli, "run", "--burst"], env=env, cwd=here)
    shown = json.loads(run("conveyor jobs show", [*cli, "jobs", "show", job, "--json"], env=env, cwd=here))
    assert shown["status"] == "succeeded" and shown["result"] == {"from": "the wheel"}, shown


def plugin_status(env_dir: Path, here: Path, env: dict[str, str]) -> dict[str, str]:
    """``conveyor plugins``: plugin name → its status word."""
    plugins = run("conveyor plugins", [str(env_dir / "bin" / "conveyor"), "plugins"], env=env, cwd=here)
    return {line.split()[0]: line.split()[-1] for line in plugins.splitlines() if line[:1].strip()
            and not line.startswith("job kinds")}


def check_core_alone(work: Path, sdist: Path) -> None:
    """The core from its sdist, with no C compiler: installs, runs a job, loads only its own plugin."""
    env_dir = work / "venv-core"
    py = fresh_venv(env_dir)
    no_cc = {**os.environ, "CC": "false", "CXX": "false"}
    run("install the core alone from its sdist, CC=false",
        [str(py), "-m", "pip", "install", "-q", str(sdist)], env=no_cc)
    names = run("what it installed", [str(py), "-m", "pip", "list", "--format=json"])
    installed = {d["name"].lower() for d in json.loads(names)}
    assert "cffi" not in installed and not installed & {"conveyor-sandbox", "conveyor-judge", "conveyor-cad"}, installed
    here = work / "deployment-core"
    env = deployment_env(here)
    smoke_job(env_dir, here, env, cad=False)
    status = plugin_status(env_dir, here, env)
    assert status == {"builtin": "ok"}, status
    print("== a plugin's command without the plugin names the distribution to install", flush=True)
    r = subprocess.run([str(env_dir / "bin" / "conveyor"), "sandbox", "run", "--", "/bin/true"], env=env, cwd=here,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "pip install 'conveyor-jobs[sandbox]'" in r.stderr, (r.returncode, r.stderr)


def main(work: Path) -> None:
    built = build_all(work / "dist")
    check_core_alone(work, built["conveyor_jobs"][0])
    env_dir = work / "venv"
    py = fresh_venv(env_dir)
    run("install every wheel into a fresh venv",
        [str(py), "-m", "pip", "install", "-q", *(str(wheel) for _sdist, wheel in built.values())])
    for _src, pkg in DISTRIBUTIONS.values():
        where = run(f"{pkg} comes from the venv and is typed",
                    [str(py), "-c", f"import {pkg}, pathlib; p = pathlib.Path({pkg}.__file__).parent; "
                                    "print(p, (p / 'py.typed').exists())"]).split()
        assert where[0].startswith(str(env_dir)), f"{pkg} imported from outside the fresh venv: {where[0]}"
        assert where[1] == "True", f"{pkg} has no py.typed"
    shipped = run("the dashboard's pages ship in the wheels",
                  [str(py), "-c", "import importlib.resources as r; "
                                  "print(all((r.files(p) / f).is_file() for p, f in ("
                                  "('conveyor.api', 'static/ui/index.html'), ('conveyor.api', 'static/ui/ui.js'), "
                                  "('conveyor.api', 'static/ui/kit.js'), ('conveyor_cad', 'ui/files.js'), "
                                  "('conveyor_cad', 'ui/viewer3d.js'), ('conveyor_judge', 'ui/problems.js'))))"])
    assert shipped.strip() == "True", "a dashboard file is missing from a wheel"
    here = work / "deployment"
    env = deployment_env(here)
    smoke_job(env_dir, here, env, cad=True)
    boxed = run("conveyor sandbox run", [str(env_dir / "bin" / "conveyor"), "sandbox", "run", "--", "/bin/echo",
                                         "hello from a box"], env=env, cwd=here)
    assert "hello from a box" in boxed, boxed
    status = plugin_status(env_dir, here, env)
    assert status == {"builtin": "ok", "cad": "ok", "judge": "ok", "sandbox": "ok"}, status
    print("ok: " + ", ".join(f"{s.name} and {w.name}" for s, w in built.values()) + " build, install and run")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/check-dist").resolve())
