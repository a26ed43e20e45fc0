"""The ``mesh`` converter (trimesh) and the shared scene → GLB + preview + metadata step."""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from conveyor_cad.converter import Converter, ConvertOptions, require
from conveyor_cad.records import ConversionError, ConvertOutput, Stage
from conveyor_cad.render import render_triangles

#: 3MF archives are zips: refuse ones that would expand past this (zip bombs)
MAX_3MF_UNCOMPRESSED = 512 * 1024 * 1024
MAX_3MF_RATIO = 200


def check_zip(path: Path) -> None:
    """Refuse a 3MF whose members would expand beyond sane limits, before any library opens it."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise ConversionError("conversion_failed", f"not a valid 3MF (zip) archive: {exc}", Stage.READ) from None
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > MAX_3MF_UNCOMPRESSED or (total / packed > MAX_3MF_RATIO and total > 16 * 1024 * 1024):
        raise ConversionError("conversion_failed", f"3MF archive expands to {total} bytes from {packed} "
                              f"(ratio {total / packed:.0f}); refused as a likely zip bomb", Stage.READ)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: a glTF JSON larger than this is refused before it is parsed
MAX_GLTF_JSON = 256 * 1024 * 1024


def gltf_json(path: Path) -> Any:
    """The JSON of a .gltf file, or of a .glb's first (JSON) chunk."""
    with open(path, "rb") as fh:
        head = fh.read(20)
        if head[:4] == b"glTF":
            if len(head) < 20:
                raise ConversionError("conversion_failed", "truncated GLB header", Stage.READ)
            length, kind = struct.unpack("<II", head[12:20])
            if kind != 0x4E4F534A:  # "JSON"
                raise ConversionError("conversion_failed", "the GLB's first chunk is not JSON", Stage.READ)
            if length > MAX_GLTF_JSON:
                raise ConversionError("conversion_failed", f"the GLB's JSON chunk is {length} bytes", Stage.READ)
            raw = fh.read(length)
        else:
            fh.seek(0)
            raw = fh.read(MAX_GLTF_JSON + 1)
            if len(raw) > MAX_GLTF_JSON:
                raise ConversionError("conversion_failed", f"the glTF JSON is larger than {MAX_GLTF_JSON} bytes",
                                      Stage.READ)
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConversionError("conversion_failed", f"the glTF JSON does not parse: {str(exc)[:200]}",
                              Stage.READ) from None


def unsafe_uri(uri: Any, folder: Path) -> str | None:
    """Why a glTF ``uri`` may not be read (None when it is a data: URI or a plain path inside ``folder``)."""
    if not isinstance(uri, str):
        return "is not a string"
    if uri[:5].lower() == "data:":
        return None
    for form in dict.fromkeys((uri, unquote(uri))):
        if "\0" in form:
            return "holds a NUL byte"
        if _SCHEME.match(form):
            return "is a URL, not a path next to the file"
        if form.startswith(("/", "\\")) or "\\" in form:
            return "is an absolute or Windows path"
        if ".." in re.split(r"[/\\]", form):
            return "climbs out of the file's folder (..)"
        base = folder.resolve()
        if not (base / form).resolve().is_relative_to(base):
            return "resolves outside the file's folder"
    return None


def check_gltf_references(path: Path) -> None:
    """Refuse a glTF/GLB any of whose ``uri`` fields (buffers, images, extensions) points outside its folder.

    Independent of what the loading library does with such a URI: only ``data:`` URIs and
    relative paths that stay in the input's folder pass; anything else is ``unsafe_reference``.
    """
    stack = [gltf_json(path)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "uri":
                    why = unsafe_uri(value, path.parent)
                    if why is not None:
                        shown = value[:120] if isinstance(value, str) else repr(value)[:120]
                        raise ConversionError("unsafe_reference", f"glTF uri {shown!r} {why}; only data: URIs and "
                                              "files beside the .gltf are read (upload a .glb, or a .gltf with "
                                              "embedded buffers)", Stage.READ)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def finish_scene(scene: Any, out_dir: Path, options: ConvertOptions, *, units: str | None = None,
                 unit_scale: float = 1.0, metadata: dict[str, Any] | None = None,
                 attributes: dict[str, Any] | None = None, warnings: tuple[str, ...] = ()) -> ConvertOutput:
    """Validate a trimesh Scene, write ``model.glb`` and ``preview.png``, and describe it.

    ``unit_scale`` converts the scene's coordinates to source units (bbox and volume are
    reported in source units).
    """
    np = require("numpy")
    trimesh = require("trimesh")
    meshes = []
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            meshes.append((node, geom_name, geom, transform))
    faces = sum(len(g.faces) for _, _, g, _ in meshes)
    if faces == 0:
        raise ConversionError("empty_geometry", "the file holds no triangles or surfaces (0 faces)", Stage.MESH)
    tris = np.concatenate([trimesh.transform_points(g.vertices, t)[g.faces] for _, _, g, t in meshes])
    finite = np.isfinite(tris).all(axis=(1, 2))
    if not finite.all():
        warnings = (*warnings, f"{int((~finite).sum())} face(s) with non-finite coordinates dropped")
        tris = tris[finite]
    if len(tris) == 0:
        raise ConversionError("empty_geometry", "every face has non-finite coordinates", Stage.MESH)
    lo, hi = tris.reshape(-1, 3).min(axis=0), tris.reshape(-1, 3).max(axis=0)
    extent = hi - lo
    if not np.isfinite(extent).all() or (extent > max(float(np.abs(hi).max()), 1e-300) * 1e-9).sum() < 2:
        raise ConversionError("empty_geometry", f"degenerate bounding box {lo.tolist()}..{hi.tolist()}: "
                              "the geometry has no area", Stage.MESH)
    solids = [g for g in (_welded(g) for _, _, g, _ in meshes) if g.is_watertight and g.is_volume]
    volume = None
    if solids and len(solids) == len(meshes):
        volume = float(sum(abs(w.volume) * abs(np.linalg.det(t[:3, :3])) for w, (_, _, _, t) in zip(solids, meshes)))
    stage_errors: list[dict[str, str]] = []
    geometry = out_dir / "model.glb"
    try:
        geometry.write_bytes(scene.export(file_type="glb"))
    except Exception as exc:
        raise ConversionError("conversion_failed", f"writing GLB failed: {type(exc).__name__}: {exc}",
                              Stage.WRITE) from None
    preview: Path | None = out_dir / "preview.png"
    try:
        render_triangles(tris, preview, options.preview_size)  # type: ignore[arg-type]
    except ConversionError:
        raise
    except Exception as exc:
        stage_errors.append({"stage": Stage.RENDER.value, "code": "conversion_failed",
                             "message": f"preview failed: {type(exc).__name__}: {exc}"})
        preview = None
    s = 1.0 / unit_scale if unit_scale else 1.0
    names = sorted({str(n) for n, _, _, _ in meshes})
    meta = {"units": units, "bbox": {"min": (lo * s).tolist(), "max": (hi * s).tolist(),
                                     "size": (extent * s).tolist()},
            "parts": len(meshes), "faces": len(tris), "vertices": int(sum(len(g.vertices) for _, _, g, _ in meshes)),
            "solids": len(solids), "volume": volume * s ** 3 if volume is not None else None,
            "watertight": bool(solids) and len(solids) == len(meshes)}
    meta.update(metadata or {})
    attrs = {"part_names": names, "solids": len(solids)}
    attrs.update(attributes or {})
    return ConvertOutput(geometry=geometry, preview=preview, metadata=meta, attributes=attrs,
                         warnings=tuple(warnings), stage_errors=tuple(stage_errors))


def _welded(mesh: Any) -> Any:
    # B-rep tessellators split vertices along sharp edges (one normal each): weld them to judge closedness
    welded = mesh.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    return welded


class MeshConverter(Converter):
    """STL, OBJ, PLY, OFF, 3MF and glTF/GLB through trimesh."""

    id: ClassVar[str] = "mesh"
    version: ClassVar[str] = "1.0"
    formats: ClassVar[tuple[str, ...]] = ("stl", "obj", "ply", "off", "3mf", "gltf", "glb")
    extensions: ClassVar[tuple[str, ...]] = (".stl", ".obj", ".ply", ".off", ".3mf", ".gltf", ".glb")
    magic: ClassVar[tuple[bytes, ...]] = (b"glTF", b"ply", b"OFF", b"solid")
    description: ClassVar[str] = "triangle meshes via trimesh"

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Load the mesh with trimesh and finish it into GLB, PNG and metadata."""
        trimesh = require("trimesh")
        if source.stat().st_size == 0:
            raise ConversionError("empty_geometry", "the file is empty (0 bytes)", Stage.READ)
        if options.format == "3mf":
            check_zip(source)
        if options.format in ("gltf", "glb"):
            check_gltf_references(source)
        warnings: list[str] = []
        try:
            if options.format == "gltf":
                # a glTF names its buffers by relative URI: resolve them next to the file
                loaded = trimesh.load(str(source), file_type="gltf", force="scene")
            else:
                with open(source, "rb") as fh:
                    data = fh.read()
                loaded = trimesh.load(io.BytesIO(data), file_type=options.format, force="scene",
                                      resolver=None, process=True)
        except ConversionError:
            raise
        except Exception as exc:
            hint = ""
            if options.format == "gltf" and isinstance(exc, (FileNotFoundError, KeyError, ValueError)):
                hint = " (a .gltf whose buffers are separate files cannot be read alone: upload a .glb, or a " \
                       ".gltf with embedded buffers)"
            raise ConversionError("conversion_failed", f"trimesh could not read this {options.format.upper()} "
                                  f"file: {type(exc).__name__}: {str(exc)[:300]}{hint}", Stage.READ) from None
        units = getattr(loaded, "units", None)
        return finish_scene(loaded, out_dir, options, units=units, warnings=tuple(warnings),
                            metadata={"format": options.format})
