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


def _reference(doc: Any, e: Any) -> tuple[str | None, int, int, str]:
    """(block name, how many times it is placed, extra entities, description) of an entity's block reference."""
    kind = e.dxftype()
    if kind == "INSERT":
        rows = max(1, int(e.dxf.get("row_count", 1) or 1))
        cols = max(1, int(e.dxf.get("column_count", 1) or 1))
        what = f"MINSERT {rows}x{cols}" if rows * cols > 1 else "INSERT"
        return e.dxf.get("name"), rows * cols, rows * cols * len(getattr(e, "attribs", ()) or ()), what
    if e.dxf.is_supported("geometry"):  # DIMENSION family, ACAD_TABLE: drawn from an anonymous block
        return e.dxf.get("geometry"), 1, 0, kind
    if kind == "MULTILEADER" or kind == "MLEADER":
        record = doc.entitydb.get(e.dxf.get("block_record_handle")) if e.dxf.hasattr("block_record_handle") else None
        name = record.dxf.get("name") if record is not None else None
        return name, 1, 0, kind
    return None, 0, 0, kind


def expanded_entities(doc: Any, layout: Any, budget: int) -> int:
    """Entities that drawing ``layout`` creates through block references, nested and arrayed.

    Counted from the block definitions (each once, without recursion), before anything is
    expanded, so a few hundred bytes asking for a 30000x30000 MINSERT fail at once instead
    of burning the time limit. Raises ``conversion_failed`` past ``budget`` and on a block
    that contains itself.
    """
    refs: dict[str, list[tuple[str | None, int, int]]] = {}
    cost: dict[str, int] = {}

    def references(name: str) -> list[tuple[str | None, int, int]]:
        if name not in refs:
            block = doc.blocks.get(name)
            refs[name] = [_reference(doc, e)[:3] for e in block] if block is not None else []
        return refs[name]

    def block_cost(root: str) -> int:
        stack: list[list[Any]] = [[root, 0]]
        on_stack = {root}
        while stack:
            frame = stack[-1]
            name, i = frame
            items = references(name)
            if i < len(items):
                frame[1] += 1
                child = items[i][0]
                if child is None or child in cost or doc.blocks.get(child) is None:
                    continue
                if child in on_stack:
                    raise ConversionError("conversion_failed", f"DXF block {child!r} contains a reference to itself",
                                          Stage.READ)
                stack.append([child, 0])
                on_stack.add(child)
                continue
            total = 0
            for child, times, extra in items:
                total += 1 + extra + times * (cost.get(child, 0) if child is not None else 0)
                if total > budget:
                    break
            cost[name] = min(total, budget + 1)
            stack.pop()
            on_stack.discard(name)
        return cost[root]

    total = 0
    for e in layout:
        name, times, extra, what = _reference(doc, e)
        if name is None:
            continue
        inside = block_cost(name) if doc.blocks.get(name) is not None else 0
        total += times * inside + extra
        if total > budget:
            raise ConversionError("conversion_failed", f"DXF expands to more than {budget} entities ({what} of block "
                                  f"{name!r} at handle {e.dxf.handle}); refused (CONVEYOR_CAD_MAX_EXPANDED_ENTITIES)",
                                  Stage.READ)
    return total


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
        expanded = expanded_entities(doc, msp, options.max_expanded_entities)
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
                "layers": layers, "entities": total, "expanded_entities": expanded,
                "entity_types": dict(counts.most_common()),
                "extents": {"min": list(lo), "max": list(hi)},
                "bbox": {"min": list(lo), "max": list(hi), "size": [size[0], size[1], hi.z - lo.z]}}
        attrs = {"layers": used_layers or layers, "title_block": fields, "units": INSUNITS.get(insunits)}
        return ConvertOutput(geometry=None, preview=preview, metadata=meta, attributes=attrs,
                             warnings=tuple(warnings), stage_errors=tuple(stage_errors))

    def _render(self, doc: Any, msp: Any, path: Path, size: int) -> None:
        require("matplotlib")
        from ezdxf.addons.drawing import Frontend, RenderContext
        from ezdxf.addons.drawing.config import BackgroundPolicy, ColorPolicy, Configuration, ImagePolicy
        from ezdxf.addons.drawing.matplotlib import MatplotlibBackend
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(size / 100, size / 100), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        # thumbnails are small: thin CAD lines would vanish, so draw every line at least ~1.5 px wide
        # IMAGE entities as rectangles: DISPLAY would open whatever path the drawing names
        cfg = Configuration(background_policy=BackgroundPolicy.WHITE, color_policy=ColorPolicy.BLACK,
                            min_lineweight=4.5, hatching_timeout=5.0, image_policy=ImagePolicy.RECT)
        Frontend(RenderContext(doc), MatplotlibBackend(ax), config=cfg).draw_layout(msp, finalize=True)
        ax.margins(0.05)
        fig.savefig(path, dpi=100, facecolor="white")
        fit_png(path, size)
