"""A+B in C++ and Python with 10 tests: the judge through the whole pipeline against bare compile + run.

For each language it measures
- bare: ``g++``/``python3`` syntax check run directly, then the program run directly on the 10 inputs
  (``subprocess``, no sandbox, no checker, no framework): the least any judge must spend;
- pipeline: one submission at a time through SQLite, the sql queue, a dispatcher and a
  ``conveyor worker`` process with 1 slot: submit → verdict in the database;
and prints their ratio (the framework's overhead: sandboxing, checking, storage, queue, database);
"judge handler" is the part spent inside the job (claim to finalize), the rest is queue and database.
Then it measures submissions per second with a worker process of 2 slots over a backlog.

    python benchmarks/judge.py [--runs 10] [--backlog 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_judge.languages import judge_path
from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package, program

TESTS = tuple((i * 7919, i * 104729) for i in range(1, 11))
LANGS = ("cpp", "python3")


def bare(lang: str, work: Path) -> float:
    """Seconds to compile (or syntax-check) and run the 10 tests directly."""
    d = Path(tempfile.mkdtemp(dir=work))
    env = {"PATH": judge_path()}
    t0 = time.perf_counter()
    if lang == "cpp":
        (d / "main.cpp").write_text(program("cpp", "aplusb"))
        subprocess.run(["g++", "-O2", "-std=gnu++17", "-pipe", "-o", "main", "main.cpp"], cwd=d, check=True, env=env)
        argv = [str(d / "main")]
    else:
        (d / "main.py").write_text(program("python3", "aplusb"))
        subprocess.run(["python3", "-c", "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')",
                        "main.py"], cwd=d, check=True, env=env)
        argv = ["python3", "-B", str(d / "main.py")]
    for a, b in TESTS:
        out = subprocess.run(argv, input=f"{a} {b}\n".encode(), capture_output=True, check=True, env=env).stdout
        assert out.split() == [str(a + b).encode()]
    elapsed = time.perf_counter() - t0
    shutil.rmtree(d)
    return elapsed


def wait_final(app: Conveyor, ids: list[str], timeout: float = 600) -> None:
    """Poll until every job is final."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} submissions not judged after {timeout}s")
        for job_id in list(pending):
            job = app.get(job_id)
            if job.status.value in ("succeeded", "failed", "cancelled"):
                if job.status.value != "succeeded" or job.result["verdict"] != "accepted":
                    raise SystemExit(f"submission {job_id} ended {job.status.value} {job.result or job.last_error}")
                pending.discard(job_id)
        time.sleep(0.01)


def start_worker(env: dict[str, str], slots: int) -> list[subprocess.Popen[bytes]]:
    """A dispatcher and a worker process."""
    full = {**os.environ, **env}
    return [subprocess.Popen([sys.executable, "-m", "conveyor", *args], env=full, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for args in (["dispatcher"], ["worker", "-c", str(slots)])]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then wait."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="submissions per language for the overhead ratio")
    ap.add_argument("--backlog", type=int, default=40, help="submissions for the throughput figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conveyor-judge-bench-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    env = {"CONVEYOR_DB_URL": f"sqlite:///{work}/bench.db", "CONVEYOR_QUEUE_URL": "sql",
           "CONVEYOR_STORAGE_URL": f"file://{work}/data", "CONVEYOR_LOG_LEVEL": "ERROR",
           "CONVEYOR_JUDGE_CACHE": str(work / "cache"), "CONVEYOR_JUDGE_PATH": judge_path()}
    os.environ.update(env)
    app = Conveyor(load_settings(env=env), plugins=load_plugins())
    app.init_db()
    pid = ProblemStore(app.storage).add(aplusb_package(tests=TESTS)).id
    rows = []
    procs = start_worker(env, 1)
    try:
        for lang in LANGS:
            bare_s = statistics.median(bare(lang, work) for _ in range(args.runs))
            wait_final(app, [app.submit("judge.submission", {"problem_id": pid, "language": lang,
                                                             "source": program(lang, "aplusb")})])  # warm-up
            lat, handler = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                job_id = app.submit("judge.submission", {"problem_id": pid, "language": lang,
                                                         "source": program(lang, "aplusb")})
                wait_final(app, [job_id])
                lat.append(time.perf_counter() - t0)
                job = app.get(job_id)
                handler.append((job.finished_at - job.started_at).total_seconds())
            rows.append((lang, bare_s, statistics.median(handler), statistics.median(lat)))
    finally:
        stop(procs)
    procs = start_worker(env, 2)
    try:
        wait_final(app, [app.submit("judge.submission", {"problem_id": pid, "language": "cpp",
                                                         "source": program("cpp", "aplusb")})])
        t0 = time.perf_counter()
        ids = [app.submit("judge.submission", {"problem_id": pid, "language": LANGS[i % 2],
                                               "source": program(LANGS[i % 2], "aplusb")})
               for i in range(args.backlog)]
        wait_final(app, ids)
        rate = args.backlog / (time.perf_counter() - t0)
    finally:
        stop(procs)
    print(f"A+B, 10 tests, {args.runs} submissions per language (medians), host load {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cpus")
    print(f"{'language':<10} {'bare compile+run s':>19} {'judge handler s':>16} {'pipeline s':>11} {'ratio':>7}")
    for lang, b, h, p in rows:
        print(f"{lang:<10} {b:>19.3f} {h:>16.3f} {p:>11.3f} {p / b:>7.2f}")
    print(f"throughput: {rate:.2f} submissions/s with 1 worker process x 2 slots "
          f"({args.backlog} submissions, C++ and Python alternating)")
    app.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
