"""Read GTS files: ``nv ne nf`` then vertices, edges (vertex pairs) and faces (edge triples), 1-based."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from conveyor_cad import ConversionError, Converter, ConvertOptions, ConvertOutput, Stage, require
from conveyor_cad.mesh import finish_scene

MAX_ELEMENTS = 20_000_000


def _numbers(line: str, n: int, kind: type, what: str, lineno: int) -> list:
    parts = line.split()
    if len(parts) < n:
        raise ConversionError("conversion_failed", f"line {lineno}: {what} needs {n} numbers, got {line!r}",
                              Stage.READ)
    try:
        return [kind(p) for p in parts[:n]]
    except ValueError:
        raise ConversionError("conversion_failed", f"line {lineno}: {what} is not numeric: {line!r}",
                              Stage.READ) from None


class GtsConverter(Converter):
    """GNU Triangulated Surface (.gts) via a small parser and trimesh."""

    id: ClassVar[str] = "gts"
    version: ClassVar[str] = "1.0"
    formats: ClassVar[tuple[str, ...]] = ("gts",)
    extensions: ClassVar[tuple[str, ...]] = (".gts",)
    description: ClassVar[str] = "GNU Triangulated Surface"

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Parse vertices, edges and faces; finish like any mesh."""
        trimesh = require("trimesh")
        lines = [(i, ln) for i, ln in enumerate(source.read_text(errors="replace").splitlines(), 1)
                 if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise ConversionError("empty_geometry", "the file is empty", Stage.READ)
        nv, ne, nf = _numbers(lines[0][1], 3, int, "the header (nv ne nf)", lines[0][0])
        if min(nv, ne, nf) < 0 or nv + ne + nf > MAX_ELEMENTS:
            raise ConversionError("conversion_failed", f"header counts {nv} {ne} {nf} are out of range", Stage.READ)
        if len(lines) < 1 + nv + ne + nf:
            raise ConversionError("conversion_failed", f"the header announces {nv + ne + nf} records but the file "
                                  f"has {len(lines) - 1}", Stage.READ)
        body = lines[1:]
        vertices = [_numbers(ln, 3, float, "a vertex", no) for no, ln in body[:nv]]
        edges = [_numbers(ln, 2, int, "an edge", no) for no, ln in body[nv:nv + ne]]
        faces = []
        for no, ln in body[nv + ne:nv + ne + nf]:
            e = [edges[k - 1] if 0 < k <= ne else None for k in _numbers(ln, 3, int, "a face", no)]
            if None in e:
                raise ConversionError("conversion_failed", f"line {no}: a face names an edge that does not exist",
                                      Stage.READ)
            a, b = e[0]
            c = next((v for v in e[1] if v not in (a, b)), None)
            if c is None or not all(0 < v <= nv for v in (a, b, c)):
                raise ConversionError("conversion_failed", f"line {no}: edges do not form a triangle", Stage.READ)
            faces.append((a - 1, b - 1, c - 1))
        mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
        return finish_scene(trimesh.Scene(mesh), out_dir, options, metadata={"format": "gts"})
