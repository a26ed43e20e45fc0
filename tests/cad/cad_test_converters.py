"""Misbehaving converters for isolation tests (loaded with CONVEYOR_PLUGINS=cad_test_converters)."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

from conveyor import hookimpl
from conveyor_cad import Converter, ConvertOptions, ConvertOutput


class HangingConverter(Converter):
    """Never returns (a native reader stuck in a loop)."""

    id = "test.hang"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        os.write(1, b"hang: reading forever\n")
        while True:
            time.sleep(0.05)


class CrashingConverter(Converter):
    """Segfaults after printing to C-level stdout, like a native library does."""

    id = "test.crash"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        os.write(1, b"**** ERR native reader: corrupt entity #42 ****\n")
        ctypes.string_at(0)
        raise AssertionError("unreachable")


class GreedyConverter(Converter):
    """Allocates far more memory than its limit allows."""

    id = "test.greedy"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        blocks = []
        while True:
            blocks.append(bytearray(256 * 1024 * 1024))


class RaisingConverter(Converter):
    """Raises an unexpected exception (a converter bug)."""

    id = "test.raise"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        raise KeyError("bug in converter")


class NoPreviewConverter(Converter):
    """Writes the geometry but its renderer fails: a partial result."""

    id = "test.partial"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        import trimesh

        from conveyor_cad.mesh import finish_scene
        out = finish_scene(trimesh.Scene(trimesh.creation.box()), out_dir, options)
        return ConvertOutput(out.geometry, None, out.metadata, out.attributes, out.warnings,
                             ({"stage": "render", "code": "conversion_failed", "message": "renderer unavailable"},))


class SlowConverter(Converter):
    """Converts a box after a pause (long enough for a test to take its job away)."""

    id = "test.slow"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        import trimesh

        from conveyor_cad.mesh import finish_scene
        time.sleep(float(os.environ.get("CAD_TEST_SLOW_SECONDS", "2")))
        return finish_scene(trimesh.Scene(trimesh.creation.box()), out_dir, options)


class AbortingConverter(Converter):
    """Aborts (SIGABRT), as a native library's failed assertion does."""

    id = "test.abort"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        os.write(1, b"native reader: assertion failed\n")
        os.abort()


def _tiny_png(path: Path) -> Path:
    from PIL import Image

    size = 64
    im = Image.new("RGB", (size, size), "white")
    for i in range(size):
        im.putpixel((i, i), (255, 0, 0))
        im.putpixel((i, size - 1 - i), (0, 0, 255))
    im.save(path)
    return path


class WalkingConverter(Converter):
    """Reports what the conversion can see of the host: the input is JSON ``{"probe": [paths]}``.

    Lists ``/`` and walks everything but /usr, /proc and /sys, without descending into the
    directories the box is given on purpose (the Python installation and Conveyor's
    packages, reported as ``bound``); checks each probe path and whether /etc/shadow can be
    read. The findings become the file's attributes.
    """

    id = "test.walk"
    formats = ()
    produces_geometry = False

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        import json
        import sys

        import conveyor
        import conveyor_cad

        probes = json.loads(source.read_text()).get("probe", [])
        bound = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
        bound |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
        bound |= {os.path.dirname(m.__file__) for m in (conveyor, conveyor_cad)}
        top = sorted(os.listdir("/"))
        walked: list[str] = []
        for entry in top:
            if entry in ("usr", "proc", "sys") or os.path.islink(os.path.join("/", entry)):
                continue
            for dirpath, dirnames, filenames in os.walk(os.path.join("/", entry)):
                dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in bound]
                walked.extend(os.path.join(dirpath, n) for n in dirnames + filenames)
                if len(walked) > 20000:
                    break
        try:
            with open("/etc/shadow", "rb") as fh:
                shadow = bool(fh.read(1) or True)
        except OSError:
            shadow = False
        found = {p: os.path.lexists(p) for p in probes}
        attrs = {"top": top, "walked": walked[:20000], "bound": sorted(bound), "probes": found,
                 "shadow_readable": shadow, "uid": os.getuid(), "cwd": os.getcwd(), "source": str(source)}
        preview = _tiny_png(out_dir / "preview.png")
        return ConvertOutput(None, preview, {"bbox": None, "walk": len(walked)}, attrs)


class SymlinkConverter(Converter):
    """Leaves its geometry as a symlink to a host file the worker must not publish."""

    id = "test.symlink"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        (out_dir / "model.glb").symlink_to("/etc/passwd")
        return ConvertOutput(out_dir / "model.glb", _tiny_png(out_dir / "preview.png"), {"bbox": None})


class ForgingConverter(Converter):
    """A converter taken over by its input: writes its own result.json naming files outside the box, then exits."""

    id = "test.forge"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        import json

        forged = {"kind": "ok", "geometry": "../../../../../../etc/shadow", "preview": "/etc/passwd",
                  "metadata": {"bbox": None}, "attributes": {}, "warnings": [], "stage_errors": []}
        Path("result.json").write_text(json.dumps(forged))
        os._exit(0)


class BigOutputConverter(Converter):
    """Writes an 8 MiB geometry file."""

    id = "test.big"
    formats = ()

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        with open(out_dir / "model.glb", "wb") as fh:
            for _ in range(8):
                fh.write(b"\0" * (1024 * 1024))
        return ConvertOutput(out_dir / "model.glb", _tiny_png(out_dir / "preview.png"), {"bbox": None})


@hookimpl
def conveyor_register_converters(registry):
    for conv in (HangingConverter(), CrashingConverter(), GreedyConverter(), RaisingConverter(),
                 NoPreviewConverter(), SlowConverter(), AbortingConverter(), WalkingConverter(), SymlinkConverter(),
                 ForgingConverter(), BigOutputConverter()):
        registry.add(conv)
