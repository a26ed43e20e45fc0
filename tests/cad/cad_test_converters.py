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


@hookimpl
def conveyor_register_converters(registry):
    for conv in (HangingConverter(), CrashingConverter(), GreedyConverter(), RaisingConverter(),
                 NoPreviewConverter(), SlowConverter()):
        registry.add(conv)
