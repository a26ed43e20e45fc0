"""CAD formats and sniffing: the content decides, the extension breaks ties."""

from __future__ import annotations

import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO


@dataclass(frozen=True)
class Format:
    """A CAD format Conveyor can recognise."""

    id: str
    name: str
    extensions: tuple[str, ...]
    mime: str


FORMATS: dict[str, Format] = {f.id: f for f in (
    Format("step", "STEP (ISO 10303-21)", (".step", ".stp", ".p21"), "model/step"),
    Format("iges", "IGES", (".iges", ".igs"), "model/iges"),
    Format("stl", "STL (ASCII or binary)", (".stl",), "model/stl"),
    Format("obj", "Wavefront OBJ", (".obj",), "model/obj"),
    Format("ply", "Stanford PLY", (".ply",), "application/x-ply"),
    Format("off", "Object File Format", (".off",), "application/x-off"),
    Format("3mf", "3D Manufacturing Format", (".3mf",), "model/3mf"),
    Format("gltf", "glTF (JSON)", (".gltf",), "model/gltf+json"),
    Format("glb", "glTF binary", (".glb",), "model/gltf-binary"),
    Format("dxf", "DXF (ASCII or binary)", (".dxf",), "image/vnd.dxf"),
    Format("dwg", "AutoCAD DWG", (".dwg",), "image/vnd.dwg"),
)}

_BY_EXT = {ext: f.id for f in FORMATS.values() for ext in f.extensions}

HEAD_BYTES = 64 * 1024
_DXF_BINARY = b"AutoCAD Binary DXF\r\n\x1a\x00"
_DWG = re.compile(rb"^AC10[0-3]\d")
_OBJ_LINE = re.compile(rb"^(v|vn|vt|f|o|g|s|usemtl|mtllib)\s", re.M)


def format_by_extension(filename: str) -> str | None:
    """Format id from a file name's extension, or None."""
    return _BY_EXT.get(PurePosixPath(filename).suffix.lower())


def mime_of(fmt: str | None) -> str:
    """MIME type of a format id (``application/octet-stream`` when unknown)."""
    f = FORMATS.get(fmt or "")
    return f.mime if f else "application/octet-stream"


def _strip(head: bytes) -> bytes:
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.lstrip()


def sniff_bytes(head: bytes, size: int, filename: str = "", path: Path | IO[bytes] | None = None) -> str | None:
    """The format of a file from its first bytes, total size and name (None if nothing matches).

    ``path`` (the whole file: a path, or a seekable binary file) is only needed to look
    inside zip containers (3MF).
    """
    ext_fmt = format_by_extension(filename)
    if head.startswith(b"glTF"):
        return "glb"
    if head.startswith(_DXF_BINARY):
        return "dxf"
    if _DWG.match(head):
        return "dwg"
    if head.startswith(b"PK\x03\x04"):
        if path is not None:
            try:
                with zipfile.ZipFile(path) as zf:
                    names = {n.lower() for n in zf.namelist()}
                if "3d/3dmodel.model" in names or any(n.endswith(".model") and n.startswith("3d/") for n in names):
                    return "3mf"
            except (zipfile.BadZipFile, OSError, ValueError, EOFError):
                pass
        return "3mf" if ext_fmt == "3mf" else None
    # binary STL: an 80-byte header and a facet count that matches the size exactly
    if size >= 84 and len(head) >= 84:
        (n,) = struct.unpack_from("<I", head, 80)
        if 84 + 50 * n == size and n > 0:
            return "stl"
    text = _strip(head)
    if text.startswith(b"ISO-10303-21;"):
        return "step"
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    if len(first) >= 73 and first[72:73] in (b"S", b"G") and re.match(rb"^.{72}[SG]\s*\d+\s*$", first):
        return "iges"
    if text.startswith(b"ply") and text[3:4] in (b"\n", b"\r"):
        return "ply"
    if re.match(rb"^(ST)?C?N?4?OFF\b", text):
        return "off"
    if text.startswith(b"solid") and (b"facet" in text or b"endsolid" in text):
        return "stl"
    if re.match(rb"^(0\s*\r?\n\s*SECTION|999\s*\r?\n)", text):
        return "dxf"
    if text.startswith(b"{") and b'"asset"' in head:
        return "gltf"
    if _OBJ_LINE.search(head[:HEAD_BYTES]) and ext_fmt in (None, "obj"):
        return "obj"
    return ext_fmt


def sniff_file(path: Path, filename: str | None = None) -> str | None:
    """The format of a local file (see ``sniff_bytes``)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    return sniff_bytes(head, size, filename or path.name, path)
