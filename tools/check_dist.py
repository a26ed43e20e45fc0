"""Build the sdist, then the wheel from it, install the wheel into a fresh venv and run it.

    python tools/check_dist.py WORKDIR

What a user of a package index gets: a wheel built from the sdist alone (so the sdist
carries everything the build needs: the C sandbox's sources, the schema migrations),
installed with nothing from the checkout on the path. The smoke run upgrades a SQLite
database, submits a job, works it off with `conveyor run --burst`, runs a program in
a C sandbox box and lists the plugins. Exits non-zero, naming the step, on any failure.
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


def run(step: str, cmd: list[str], **kw: object) -> str:
    print(f"== {step}: {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        sys.exit(f"{step} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return str(r.stdout)


def main(work: Path) -> None:
    dist = work / "dist"
    run("build the sdist, then the wheel from it", [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, (wheels, sdists)
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    py = env_dir / "bin" / "python"
    run("install the wheel into a fresh venv", [str(py), "-m", "pip", "install", "-q", str(wheels[0])])
    site = run("where it went", [str(py), "-c", "import conveyor, sys; print(conveyor.__file__)"]).strip()
    assert site.startswith(str(env_dir)), f"conveyor imported from outside the fresh venv: {site}"
    for pkg in ("conveyor", "conveyor_sandbox", "conveyor_judge", "conveyor_cad"):
        out = run(f"{pkg} is typed", [str(py), "-c", f"import {pkg}, pathlib; "
                                      f"print((pathlib.Path({pkg}.__file__).parent / 'py.typed').exists())"])
        assert out.strip() == "True", f"{pkg} has no py.typed"
    here = work / "deployment"
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({"CONVEYOR_DB_URL": f"sqlite:///{here}/conveyor.db", "CONVEYOR_QUEUE_URL": "sql",
                "CONVEYOR_STORAGE_URL": f"file://{here}/data", "CONVEYOR_CONFIG": "", "PYTHONPATH": ""})
    cli = [str(env_dir / "bin" / "conveyor")]
    out = run("conveyor db upgrade", [*cli, "db", "upgrade"], env=env, cwd=here)
    assert out.startswith("applied jobs 0001"), out
    run("conveyor db status", [*cli, "db", "status"], env=env, cwd=here)
    job = run("conveyor submit", [*cli, "submit", "conveyor.echo", "--payload", '{"from": "the wheel"}'],
              env=env, cwd=here).strip().split()[-1]
    run("conveyor run --burst", [*cli, "run", "--burst"], env=env, cwd=here)
    shown = json.loads(run("conveyor jobs show", [*cli, "jobs", "show", job, "--json"], env=env, cwd=here))
    assert shown["status"] == "succeeded" and shown["result"] == {"from": "the wheel"}, shown
    boxed = run("conveyor sandbox run", [*cli, "sandbox", "run", "--", "/bin/echo", "hello from a box"],
                env=env, cwd=here)
    assert "hello from a box" in boxed, boxed
    plugins = run("conveyor plugins", [*cli, "plugins"], env=env, cwd=here)
    status = {line.split()[0]: line.split()[-1] for line in plugins.splitlines() if line[:1].strip()}
    assert all(status.get(name) == "ok" for name in ("builtin", "cad", "judge", "sandbox")), plugins
    print(f"ok: {sdists[0].name} and {wheels[0].name} build, install and run")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/check-dist").resolve())
