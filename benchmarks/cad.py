"""CAD conversion benchmark: the pipeline against direct library calls, and files per minute with 2 slots.

For each good sample file (the test manifest's real files plus the shipped bracket):

- ``library ms``: the bare library call on the file (trimesh.load / cascadio.load / ezdxf recover),
- ``convert ms``: the converter in-process (library + GLB + preview + metadata, no child, no DB),
- ``pipeline ms``: add_file → dispatcher → queue → worker → child process → storage → file row ``done``,
  one file at a time, measured from submit to the job's finish,

and the overhead ratios pipeline/convert and pipeline/library. Then every file is submitted
at once to a worker with 2 slots and the throughput is printed as files per minute.

    python benchmarks/cad.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cad"))

from cad_data import fetch_manifest_files  # noqa: E402

from conveyor.app import Conveyor  # noqa: E402
from conveyor.config import load_settings  # noqa: E402
from conveyor.outbox import Dispatcher  # noqa: E402
from conveyor.plugins import load_plugins  # noqa: E402
from conveyor.worker import Worker  # noqa: E402
from conveyor_cad.converter import ConvertOptions  # noqa: E402
from conveyor_cad.files import add_file  # noqa: E402
from conveyor_cad.formats import sniff_file  # noqa: E402
from conveyor_cad.samples import sample_path  # noqa: E402


def library_call(path: Path, fmt: str) -> None:
    """The bare library read of a file, as a caller without Conveyor would do it."""
    if fmt in ("step", "iges"):
        import cascadio
        cascadio.load(path.read_bytes(), file_type=fmt, tol_linear=0.1, tol_relative=True, use_parallel=False)
    elif fmt == "dxf":
        import ezdxf
        from ezdxf import recover
        try:
            recover.readfile(str(path))
        except ezdxf.DXFStructureError:  # binary DXF
            ezdxf.readfile(str(path))
    else:
        import trimesh
        trimesh.load(io.BytesIO(path.read_bytes()), file_type=fmt, force="scene")


def converter_call(app: Conveyor, path: Path, fmt: str, out: Path) -> None:
    """The converter's own work in this process (library, GLB, preview, metadata)."""
    from conveyor_cad.routing import local_converter
    conv = local_converter(app.plugins.registry("converters"), fmt)
    assert conv is not None
    out.mkdir(parents=True, exist_ok=True)
    conv.convert(path, out, ConvertOptions(format=fmt, filename=path.name))


class Pipe:
    """A dispatcher and a worker in threads."""

    def __init__(self, app: Conveyor, slots: int) -> None:
        self.dispatcher = Dispatcher(app.store, app.queue, batch=100)
        self.worker = Worker(app, concurrency=slots, block_ms=50)
        self.threads = [threading.Thread(target=self.dispatcher.run, daemon=True),
                        threading.Thread(target=self.worker.run, kwargs={"install_signals": False}, daemon=True)]

    def __enter__(self) -> Pipe:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.worker.stop()
        self.dispatcher.stop()
        for t in self.threads:
            t.join(timeout=30)


def wait(app: Conveyor, ids: list[str]) -> list[Any]:
    while True:
        jobs = [app.get(i) for i in ids]
        if all(j.status.value in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        time.sleep(0.02)


def main() -> None:
    """Run the benchmark and print a table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per file for the per-file timings (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    manifest = ROOT / "tests" / "cad" / "data_manifest.json"
    entries = json.loads(manifest.read_text())["files"]
    paths = fetch_manifest_files(manifest)
    samples = [(e["id"], paths[e["id"]]) for e in entries if e["expect"] == "ok"]
    samples += [("bracket_step", sample_path("bracket.step")), ("bracket_stl", sample_path("bracket.stl"))]
    with tempfile.TemporaryDirectory(prefix="conveyor-cad-bench-") as tmp:
        env = {"CONVEYOR_DB_URL": f"sqlite:///{tmp}/bench.db", "CONVEYOR_QUEUE_URL": "sql",
               "CONVEYOR_STORAGE_URL": f"file://{tmp}/data", "CONVEYOR_PLUGINS": "", "CONVEYOR_LEASE_SECONDS": "60"}
        app = Conveyor(load_settings(env=env), plugins=load_plugins())
        app.init_db()
        rows = []
        with Pipe(app, slots=1):
            for name, path in samples:
                fmt = sniff_file(path) or ""
                lib, conv, pipe = [], [], []
                for r in range(args.repeat):
                    t0 = time.perf_counter()
                    library_call(path, fmt)
                    lib.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    converter_call(app, path, fmt, Path(tmp) / f"direct-{name}-{r}")
                    conv.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    added = add_file(app, path, path.name)
                    (job,) = wait(app, [added.job_id or ""])
                    pipe.append(time.perf_counter() - t0)
                    if job.status.value != "succeeded":
                        raise SystemExit(f"{name}: {job.error_code}: {job.last_error}")
                lm, cm, pm = (statistics.median(x) * 1000 for x in (lib, conv, pipe))
                rows.append({"file": name, "format": fmt, "bytes": path.stat().st_size, "library_ms": round(lm, 1),
                             "convert_ms": round(cm, 1), "pipeline_ms": round(pm, 1),
                             "pipeline_over_convert": round(pm / cm, 2), "pipeline_over_library": round(pm / lm, 1)})
        batch = [p for _, p in samples] * 2
        with Pipe(app, slots=2):
            t0 = time.perf_counter()
            ids = [add_file(app, p, p.name).job_id or "" for p in batch]
            jobs = wait(app, ids)
            elapsed = time.perf_counter() - t0
        ok = sum(j.status.value == "succeeded" for j in jobs)
        app.close()
        app.engine.dispose()
    throughput = {"files": len(batch), "succeeded": ok, "seconds": round(elapsed, 2),
                  "files_per_minute_2_slots": round(len(batch) / elapsed * 60, 1)}
    if args.json:
        print(json.dumps({"per_file": rows, "throughput": throughput}, indent=2))
        return
    print(f"{'file':24} {'fmt':5} {'bytes':>9} {'library ms':>11} {'convert ms':>11} {'pipeline ms':>12} "
          f"{'pipe/conv':>10} {'pipe/lib':>9}")
    for r in rows:
        print(f"{r['file']:24} {r['format']:5} {r['bytes']:>9} {r['library_ms']:>11} {r['convert_ms']:>11} "
              f"{r['pipeline_ms']:>12} {r['pipeline_over_convert']:>10} {r['pipeline_over_library']:>9}")
    print(f"median overhead pipeline/convert: {statistics.median(r['pipeline_over_convert'] for r in rows):.2f}x")
    print(f"throughput: {throughput['files']} files ({ok} succeeded) in {throughput['seconds']}s with 2 slots = "
          f"{throughput['files_per_minute_2_slots']} files/minute")


if __name__ == "__main__":
    main()
