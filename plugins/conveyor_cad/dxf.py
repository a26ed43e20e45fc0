"""The ``dxf`` converter: ASCII and binary DXF through ezdxf, rendered with its drawing add-on."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from conveyor_cad.converter import Converter, ConvertOptions, require
from conveyor_cad.records import ConversionError, ConvertOutput, Stage
from conveyor_cad.render import fit_png

#: $INSUNITS codes → unit names (DXF reference)
INSUNITS = {0: None, 1: "in", 2: "ft", 3: "mi", 4: "mm", 5: "cm", 6: "m", 7: "km", 8: "µin", 9: "mil",
            10: "yd", 11: "Å", 12: "nm", 13: "µm", 14: "dm", 15: "dam", 16: "hm", 17: "Gm", 18: "AU",
            19: "ly", 20: "pc"}
_KV = re.compile(r"^\s*([A-Za-z][\w .\-/]{0,40}?)\s*[=:]\s*(\S.{0,200}?)\s*$")


def title_block(msp: Any) -> dict[str, str]:
    """``key=value`` (or ``key: value``) fields found in TEXT/MTEXT and block attributes."""
    fields: dict[str, str] = {}
    for e in msp.query("TEXT MTEXT INSERT"):
        texts: list[str] = []
        kind = e.dxftype()
        if kind == "TEXT":
            texts = [e.dxf.text]
        elif kind == "MTEXT":
            texts = e.plain_text().splitlines()
        else:
            for attrib in getattr(e, "attribs", []):
                tag, value = attrib.dxf.tag, attrib.dxf.text
                if tag and value:
                    fields.setdefault(str(tag).strip(), str(value).strip())
        for t in texts:
            m = _KV.match(t or "")
            if m:
                fields.setdefault(m.group(1).strip(), m.group(2).strip())
    return fields


class DxfConverter(Converter):
    """DXF drawings: a PNG of model space, layers, entities, extents, units and title-block fields."""

    id: ClassVar[str] = "dxf"
    version: ClassVar[str] = "1.0"
    formats: ClassVar[tuple[str, ...]] = ("dxf",)
    extensions: ClassVar[tuple[str, ...]] = (".dxf",)
    magic: ClassVar[tuple[bytes, ...]] = (b"AutoCAD Binary DXF",)
    produces_geometry: ClassVar[bool] = False
    description: ClassVar[str] = "2D drawings via ezdxf (recover, drawing add-on)"

    def _read(self, source: Path) -> tuple[Any, list[str]]:
        ezdxf = require("ezdxf")
        from ezdxf import recover

        warnings: list[str] = []
        try:
            doc, auditor = recover.readfile(str(source))
        except Exception as first:
            # recover reads ASCII only in some versions; binary DXF goes through readfile
            try:
                doc = ezdxf.readfile(str(source))
            except Exception as exc:
                raise ConversionError("conversion_failed", f"ezdxf could not read this DXF: {first}; "
                                      f"{type(exc).__name__}: {str(exc)[:300]}", Stage.READ) from None
            auditor = doc.audit()
        for fix in list(getattr(auditor, "fixes", []))[:50]:
            warnings.append(f"auditor fixed: {fix.message}")
        for err in list(getattr(auditor, "errors", []))[:50]:
            warnings.append(f"auditor error: {err.message}")
        return doc, warnings

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Read, audit, describe and render the drawing."""
        if source.stat().st_size == 0:
            raise ConversionError("empty_geometry", "the file is empty (0 bytes)", Stage.READ)
        doc, warnings = self._read(source)
        from ezdxf import bbox

        msp = doc.modelspace()
        counts = Counter(e.dxftype() for e in msp)
        total = sum(counts.values())
        if total == 0:
            raise ConversionError("empty_geometry", "model space holds no entities", Stage.MESH)
        try:
            box = bbox.extents(msp, fast=True)
        except Exception as exc:
            raise ConversionError("conversion_failed", f"cannot compute the drawing's extents: {exc}",
                                  Stage.MESH) from None
        if not box.has_data:
            raise ConversionError("empty_geometry", f"{total} entities but none with geometry", Stage.MESH)
        lo, hi = box.extmin, box.extmax
        size = (hi.x - lo.x, hi.y - lo.y)
        if not all(math.isfinite(v) for v in (*lo, *hi)) or max(size) <= 0:
            raise ConversionError("empty_geometry", f"degenerate extents {tuple(lo)}..{tuple(hi)}", Stage.MESH)
        insunits = int(doc.header.get("$INSUNITS", 0) or 0)
        used_layers = sorted({e.dxf.layer for e in msp if e.dxf.hasattr("layer")})
        layers = sorted({layer.dxf.name for layer in doc.layers} | set(used_layers))
        fields = title_block(msp)
        stage_errors: list[dict[str, str]] = []
        preview: Path | None = out_dir / "preview.png"
        try:
            self._render(doc, msp, preview, options.preview_size)  # type: ignore[arg-type]
        except Exception as exc:
            stage_errors.append({"stage": Stage.RENDER.value, "code": "conversion_failed",
                                 "message": f"drawing add-on failed: {type(exc).__name__}: {exc}"[:500]})
            preview = None
        meta = {"units": INSUNITS.get(insunits), "insunits": insunits, "dxfversion": doc.dxfversion,
                "layers": layers, "entities": total, "entity_types": dict(counts.most_common()),
                "extents": {"min": list(lo), "max": list(hi)},
                "bbox": {"min": list(lo), "max": list(hi), "size": [size[0], size[1], hi.z - lo.z]}}
        attrs = {"layers": used_layers or layers, "title_block": fields, "units": INSUNITS.get(insunits)}
        return ConvertOutput(geometry=None, preview=preview, metadata=meta, attributes=attrs,
                             warnings=tuple(warnings), stage_errors=tuple(stage_errors))

    def _render(self, doc: Any, msp: Any, path: Path, size: int) -> None:
        require("matplotlib")
        from ezdxf.addons.drawing import Frontend, RenderContext
        from ezdxf.addons.drawing.config import BackgroundPolicy, ColorPolicy, Configuration
        from ezdxf.addons.drawing.matplotlib import MatplotlibBackend
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(size / 100, size / 100), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        # thumbnails are small: thin CAD lines would vanish, so draw every line at least ~1.5 px wide
        cfg = Configuration(background_policy=BackgroundPolicy.WHITE, color_policy=ColorPolicy.BLACK,
                            min_lineweight=4.5, hatching_timeout=5.0)
        Frontend(RenderContext(doc), MatplotlibBackend(ax), config=cfg).draw_layout(msp, finalize=True)
        ax.margins(0.05)
        fig.savefig(path, dpi=100, facecolor="white")
        fit_png(path, size)
