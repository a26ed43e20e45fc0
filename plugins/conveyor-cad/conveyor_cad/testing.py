"""``ConverterContract``: the test suite every CAD converter passes (subclass it in your plugin's tests).

Import it as ``conveyor_cad.testing.ConverterContract``.

```python
from conveyor_cad.testing import ConverterContract

class TestMyConverter(ConverterContract):
    converter = MyConverter()
    format = "gts"

    def make_good_file(self, directory):
        return Path(__file__).parent / "data" / "tetra.gts"
```

It checks what a host relies on: the converter declares itself, pickles (it runs in a
child process), turns a good file into a non-blank PNG of the requested size and a GLB
with faces, and turns empty and garbage input into a ``failed`` conversion with a code,
never an exception out of the job, both directly and through a real worker.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conveyor.plugin_api import hookimpl

FINAL = ("succeeded", "failed", "cancelled")


class _Registers:
    def __init__(self, converter: Any) -> None:
        self.converter = converter

    @hookimpl
    def conveyor_register_converters(self, registry: Any) -> None:
        """Register the converter under test (unless an installed plugin already did)."""
        if self.converter.id not in registry:
            registry.add(self.converter)


class ConverterContract:
    """Contract tests for a ``conveyor_cad`` converter; set ``converter``, ``format`` and ``make_good_file``."""

    converter: ClassVar[Any] = None
    format: ClassVar[str] = ""
    preview_size: ClassVar[int] = 256
    time_limit_s: ClassVar[float] = 120.0
    memory_mb: ClassVar[int] = 3072

    def make_good_file(self, directory: Path) -> Path:
        """A small file this converter must convert (write it into ``directory`` or return a shipped one)."""
        raise NotImplementedError("a ConverterContract subclass must implement make_good_file")

    def make_garbage_file(self, directory: Path) -> Path:
        """Bytes that are not this format (override for formats where these would parse)."""
        p = directory / f"garbage.{self.format or 'bin'}"
        p.write_bytes(b"\x00\xff garbage \x13\x37" + os.urandom(512))
        return p

    # ------------------------------------------------------------ helpers

    def _run(self, source: Path, out_dir: Path) -> Any:
        from conveyor_cad.converter import ConvertOptions
        from conveyor_cad.isolation import Limits, run_converter
        opts = ConvertOptions(format=self.format, filename=source.name, preview_size=self.preview_size)
        if not self.converter.isolated:
            from conveyor_cad.isolation import ChildRun
            from conveyor_cad.records import ConversionError
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                return ChildRun(self.converter.convert(source, out_dir, opts), None, "", 0.0, 0)
            except ConversionError as err:
                return ChildRun(None, err, "", 0.0, 0)
        return run_converter(self.converter, source, out_dir, opts, Limits(self.time_limit_s, self.memory_mb))

    # ------------------------------------------------------------ the contract

    def test_declares_id_version_formats_and_extensions(self) -> None:
        """The converter says who it is and what it takes."""
        c = self.converter
        assert isinstance(c.id, str) and c.id, "converter.id must be a non-empty string"
        assert isinstance(c.version, str) and c.version
        assert self.format in c.formats, f"{c.id} must list {self.format!r} in formats"
        assert all(isinstance(e, str) and e.startswith(".") and e == e.lower() for e in c.extensions)
        assert all(isinstance(m, bytes) for m in c.magic)
        assert c.accepts(self.format)

    def test_pickles_for_the_child_process(self) -> None:
        """The converter survives pickling (each conversion runs in a child process)."""
        clone = pickle.loads(pickle.dumps(self.converter))
        assert type(clone) is type(self.converter) and clone.id == self.converter.id

    def test_good_file_gives_a_png_and_a_glb_with_faces(self, tmp_path: Path) -> None:
        """A good file becomes a non-blank PNG of the requested size and, for 3D converters, a GLB with faces."""
        import trimesh
        from PIL import Image

        run = self._run(self.make_good_file(tmp_path), tmp_path / "out")
        assert run.error is None, f"{run.error.code}: {run.error.message}\n{run.captured}"
        out = run.output
        assert out.preview is not None and out.preview.is_file(), "no preview.png written"
        im = Image.open(out.preview)
        assert im.format == "PNG" and im.size == (self.preview_size, self.preview_size)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 2, "the preview is blank"
        if self.converter.produces_geometry:
            assert out.geometry is not None and out.geometry.read_bytes()[:4] == b"glTF", "no GLB written"
            scene: Any = trimesh.load(io.BytesIO(out.geometry.read_bytes()), file_type="glb", force="scene")
            assert sum(len(g.faces) for g in scene.geometry.values()) > 0, "the GLB has no faces"
        assert isinstance(out.metadata, dict) and "bbox" in out.metadata, "metadata must carry a bbox"

    @pytest.mark.parametrize("kind", ["empty", "garbage"])
    def test_bad_input_fails_with_a_code(self, tmp_path: Path, kind: str) -> None:
        """Empty and garbage input end as a ConversionError with a catalog code, never a crash or a success."""
        if kind == "empty":
            source = tmp_path / f"empty.{self.format or 'bin'}"
            source.write_bytes(b"")
        else:
            source = self.make_garbage_file(tmp_path)
        run = self._run(source, tmp_path / "out")
        assert run.output is None, f"{kind} input converted successfully: {run.output}"
        assert run.error.code in ("empty_geometry", "conversion_failed", "unsupported_format"), run.error.code
        assert run.error.message and "Traceback" not in run.error.message

    def test_through_a_worker_good_and_bad_files(self, tmp_path: Path) -> None:
        """Through a real job: the good file is ``done`` with both paths, garbage is ``failed`` with a code."""
        from conveyor.plugin_api import Conveyor, Dispatcher, Worker, load_plugins, load_settings
        from conveyor_cad.files import add_file, get_file

        env = {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/contract.db", "CONVEYOR_QUEUE_URL": "sql",
               "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data", "CONVEYOR_LEASE_SECONDS": "30",
               "CONVEYOR_PLUGINS": ""}
        plugins = load_plugins(register=lambda pm: pm.register(_Registers(self.converter), name="contract"))
        app = Conveyor(load_settings(env=env), plugins=plugins)
        app.init_db()
        files = [add_file(app, self.make_good_file(tmp_path), convert=False),
                 add_file(app, self.make_garbage_file(tmp_path), convert=False)]
        ids = [app.submit("cad.convert", {"file_id": f.file.id, "converter": self.converter.id}, file_id=f.file.id,
                          max_attempts=1) for f in files]
        dispatcher, worker = Dispatcher(app.store, app.queue), Worker(app, concurrency=2, block_ms=100)
        threads = [threading.Thread(target=dispatcher.run, daemon=True),
                   threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + self.time_limit_s * 2
            while not all(app.get(i).status.value in FINAL for i in ids):
                assert time.monotonic() < deadline, "conversions did not finish"
                time.sleep(0.05)
        finally:
            worker.stop()
            dispatcher.stop()
            for t in threads:
                t.join(timeout=30)
        good, bad = (app.get(i) for i in ids)
        good_rec, bad_rec = (get_file(app.engine, f.file.id) for f in files)
        assert good.status.value == "succeeded", good.last_error
        assert good_rec is not None and good_rec.conversion_status == "done" and good_rec.preview_path
        assert (good_rec.geometry_path is not None) == bool(self.converter.produces_geometry)
        assert bad.status.value == "failed" and bad.error_code in app.plugins.catalog
        assert bad_rec is not None and bad_rec.conversion_status in ("failed", "unsupported")
        assert bad_rec.conversion_error is not None
        assert bad_rec.conversion_error["converter"] == self.converter.id
        app.close()
        app.engine.dispose()
