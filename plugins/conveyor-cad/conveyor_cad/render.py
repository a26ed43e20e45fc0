"""CPU-only previews: shaded triangles through matplotlib's Agg canvas, no display needed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from conveyor_cad.converter import require

MAX_PREVIEW_FACES = 150_000
# painter's ordering is per triangle: long triangles are split first so concave corners sort right
REFINE_TARGET_FACES = 20_000
REFINE_EDGE_FRACTION = 0.08
BACKGROUND = (1.0, 1.0, 1.0)
BASE_COLOR = (0.35, 0.55, 0.8)


def _view_rotation(np: Any, azimuth_deg: float = 45.0, elevation_deg: float = 30.0) -> Any:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(el), -math.sin(el)], [0, math.sin(el), math.cos(el)]])
    # z-up model seen from the front-right, above: camera looks along -z of view space
    tilt = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    return rx @ tilt @ rz


def _refine(np: Any, tri: Any) -> Any:
    """Split triangles longer than a fraction of the model's size into four, within a face budget."""
    extent = np.linalg.norm(tri.reshape(-1, 3).max(axis=0) - tri.reshape(-1, 3).min(axis=0))
    if extent == 0:
        return tri
    limit = extent * REFINE_EDGE_FRACTION
    while len(tri) < REFINE_TARGET_FACES:
        edges = np.stack([np.linalg.norm(tri[:, i] - tri[:, (i + 1) % 3], axis=1) for i in range(3)], axis=1)
        long = edges.max(axis=1) > limit
        n_long = int(long.sum())
        if n_long == 0 or len(tri) + 3 * n_long > REFINE_TARGET_FACES:
            break
        t = tri[long]
        a, b, c = t[:, 0], t[:, 1], t[:, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        split = np.concatenate([np.stack(s, axis=1) for s in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        tri = np.concatenate([tri[~long], split])
    return tri


def render_triangles(triangles: Any, path: Path, size: int = 512) -> None:
    """Write a framed, shaded isometric view of ``triangles`` (Nx3x3, any units) as a sizexsize PNG."""
    np = require("numpy")
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    tri = np.asarray(triangles, dtype=np.float64)
    if len(tri) > MAX_PREVIEW_FACES:
        keep = np.random.default_rng(0).choice(len(tri), MAX_PREVIEW_FACES, replace=False)
        tri = tri[np.sort(keep)]
    tri = _refine(np, tri)
    centre = (tri.reshape(-1, 3).max(axis=0) + tri.reshape(-1, 3).min(axis=0)) / 2
    view = (tri - centre) @ _view_rotation(np).T
    normals = np.cross(view[:, 1] - view[:, 0], view[:, 2] - view[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    lengths[lengths == 0] = 1.0
    normals /= lengths[:, None]
    light = np.array([-0.3, 0.5, 1.0])
    light /= np.linalg.norm(light)
    # two-sided lighting: meshes from the wild have inconsistent winding
    shade = 0.3 + 0.7 * np.abs(normals @ light)
    colors = np.clip(np.outer(shade, BASE_COLOR), 0, 1)
    order = np.argsort(view[:, :, 2].mean(axis=1))  # far first (painter's algorithm)
    polys = view[order][:, :, :2]
    fig = Figure(figsize=(size / 100, size / 100), dpi=100, facecolor=BACKGROUND)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.add_collection(PolyCollection(polys, facecolors=colors[order], edgecolors=colors[order], linewidths=0.2,
                                     antialiaseds=False))
    _frame(ax, polys.reshape(-1, 2))
    fig.savefig(path, dpi=100, facecolor=BACKGROUND)


def _frame(ax: Any, pts: Any) -> None:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = max(float(hi[0] - lo[0]), float(hi[1] - lo[1])) or 1.0
    mid = (lo + hi) / 2
    half = span * 0.55
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_aspect("equal")


def fit_png(path: Path, size: int) -> None:
    """Make a PNG exactly sizexsize on white, keeping its aspect (drawing back-ends size loosely)."""
    pil = require("PIL.Image", package="pillow")
    with pil.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        canvas = pil.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    canvas.save(path, format="PNG")
