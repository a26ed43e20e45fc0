"""The ``brep`` converter: STEP and IGES through cascadio (OpenCASCADE) to GLB; and ``dwg`` (unsupported)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import ClassVar

from conveyor_cad.converter import Converter, ConvertOptions, require
from conveyor_cad.mesh import finish_scene
from conveyor_cad.records import ConversionError, ConvertOutput, Stage

_SI_PREFIX = {"": 1.0, "MILLI": 1e-3, "CENTI": 1e-2, "DECI": 1e-1, "KILO": 1e3, "MICRO": 1e-6, "NANO": 1e-9}
_SI_NAME = {"": "m", "MILLI": "mm", "CENTI": "cm", "DECI": "dm", "KILO": "km", "MICRO": "µm", "NANO": "nm"}
_CONVERTED = {"INCH": ("in", 0.0254), "FOOT": ("ft", 0.3048), "MILLIMETRE": ("mm", 1e-3), "MILLIMETER": ("mm", 1e-3)}
#: IGES global parameter 14 (unit flag) → (name, metres)
_IGES_UNITS = {1: ("in", 0.0254), 2: ("mm", 1e-3), 4: ("ft", 0.3048), 5: ("mi", 1609.344), 6: ("m", 1.0),
               7: ("km", 1e3), 8: ("mil", 2.54e-5), 9: ("µm", 1e-6), 10: ("cm", 1e-2), 11: ("µin", 2.54e-8)}


def step_units(head: str) -> tuple[str | None, float]:
    """Length unit of a STEP file (name, metres per unit); (None, 1.0) if not declared."""
    m = re.search(r"LENGTH_UNIT\s*\(\s*\)\s*NAMED_UNIT\s*\(\s*\*\s*\)\s*SI_UNIT\s*\(\s*\.?(\w*)\.?\s*,\s*\.METRE\.",
                  head) or re.search(r"SI_UNIT\s*\(\s*\.?(\w*?)\.?\s*,\s*\.METRE\.\s*\)", head)
    if m:
        prefix = m.group(1).strip(".").upper()
        if prefix in ("$", ""):
            prefix = ""
        return _SI_NAME.get(prefix, "m"), _SI_PREFIX.get(prefix, 1.0)
    m = re.search(r"CONVERSION_BASED_UNIT\s*\(\s*'(\w+)'", head)
    if m and m.group(1).upper() in _CONVERTED:
        return _CONVERTED[m.group(1).upper()]
    return None, 1.0


def iges_units(text: str) -> tuple[str | None, float]:
    """Length unit from an IGES global section (parameter 14, the unit flag)."""
    glob = "".join(line[:72] for line in text.splitlines() if len(line) >= 73 and line[72] == "G")
    if not glob:
        return None, 1.0
    pd, rd = (glob[2], glob[5]) if glob.startswith("1H") and glob[3:5] == "1H" else (",", ";")
    params: list[str] = []
    cur, i = "", 0
    while i < len(glob):
        mh = re.match(r"(\d+)H", glob[i:])
        if mh and cur.strip() == "":
            n = int(mh.group(1))
            start = i + len(mh.group(0))
            cur = glob[start:start + n]
            i = start + n
            continue
        ch = glob[i]
        if ch in (pd, rd):
            params.append(cur.strip())
            cur = ""
            if ch == rd:
                break
        else:
            cur += ch
        i += 1
    try:
        flag = int(float(params[13]))
    except (IndexError, ValueError):
        return None, 1.0
    return _IGES_UNITS.get(flag, (None, 1.0))


def _no_entities(data: bytes, file_type: str) -> bool:
    if file_type == "step":
        # a well-formed file whose DATA section is empty, as opposed to one that does not parse
        return re.search(rb"DATA\s*;\s*ENDSEC\s*;", data) is not None and re.search(rb"#\d+\s*=", data) is None
    return not any(len(line) >= 73 and line[72:73] == b"D" for line in data.splitlines())


class BrepConverter(Converter):
    """STEP/STP and IGES/IGS: B-rep tessellated by OpenCASCADE (cascadio), bbox in source units."""

    id: ClassVar[str] = "brep"
    version: ClassVar[str] = "1.0"
    formats: ClassVar[tuple[str, ...]] = ("step", "iges")
    extensions: ClassVar[tuple[str, ...]] = (".step", ".stp", ".iges", ".igs")
    magic: ClassVar[tuple[bytes, ...]] = (b"ISO-10303-21;",)
    description: ClassVar[str] = "STEP and IGES via cascadio (OpenCASCADE)"

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Tessellate with OpenCASCADE, then finish the GLB scene like any mesh."""
        cascadio = require("cascadio")
        trimesh = require("trimesh")
        data = source.read_bytes()
        if not data.strip():
            raise ConversionError("empty_geometry", "the file is empty", Stage.READ)
        file_type = "iges" if options.format == "iges" else "step"
        text = data[:2_000_000].decode("latin-1")
        units, scale = step_units(text) if file_type == "step" else iges_units(text)
        glb = cascadio.load(data, file_type=file_type, tol_linear=options.linear_tolerance, tol_relative=True,
                            tol_angular=options.angular_tolerance, use_parallel=False)
        if not glb:
            if _no_entities(data, file_type):
                raise ConversionError("empty_geometry", f"the {file_type.upper()} file holds no entities",
                                      Stage.READ)
            raise ConversionError("conversion_failed", f"OpenCASCADE could not read this {file_type.upper()} file "
                                  "(see the converter output)", Stage.READ)
        try:
            scene = trimesh.load(io.BytesIO(glb), file_type="glb", force="scene")
        except Exception as exc:
            raise ConversionError("conversion_failed", f"OpenCASCADE produced an unreadable GLB: {exc}",
                                  Stage.MESH) from None
        # glTF is in metres: report the bbox and volume in the file's own unit
        return finish_scene(scene, out_dir, options, units=units, unit_scale=scale,
                            metadata={"format": file_type, "tessellation": {
                                "linear_relative": options.linear_tolerance, "angular": options.angular_tolerance}})


class DwgConverter(Converter):
    """DWG is recognised but no open reader exists: ends ``unsupported`` with a clear code."""

    id: ClassVar[str] = "dwg"
    version: ClassVar[str] = "1.0"
    formats: ClassVar[tuple[str, ...]] = ("dwg",)
    extensions: ClassVar[tuple[str, ...]] = (".dwg",)
    magic: ClassVar[tuple[bytes, ...]] = (b"AC10",)
    supported: ClassVar[bool] = False
    isolated: ClassVar[bool] = False
    description: ClassVar[str] = "recognised only: route DWG to a connector, or export DXF/STEP"

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Always refuse, naming the DWG release and the ways out."""
        head = source.read_bytes()[:6].decode("ascii", "replace")
        raise ConversionError("unsupported_format", f"DWG ({head}) has no open-source reader; export the drawing "
                              "as DXF or STEP, or route dwg to a connector (CONVEYOR_CAD_ROUTING=dwg=connector)",
                              Stage.READ)
