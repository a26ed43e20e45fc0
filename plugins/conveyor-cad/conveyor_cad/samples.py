"""The sample CAD files shipped for ``conveyor demo``: an L bracket as STEP (B-rep) and STL, generated here.

``python -m conveyor_cad.samples DIR`` writes them again.
"""

from __future__ import annotations

import math
import struct
import sys
from importlib import resources
from pathlib import Path

#: the bracket's profile (mm, counter-clockwise) extruded by ``DEPTH`` along z
PROFILE: tuple[tuple[float, float], ...] = (
    (0, 0), (60, 0), (60, 8), (20, 8), (8, 20), (8, 45), (0, 45))
DEPTH = 30.0


def sample_path(name: str) -> Path:
    """Path of a shipped sample (``bracket.step``, ``bracket.stl``)."""
    return Path(str(resources.files("conveyor_cad") / "data" / name))


class _Step:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> str:
        self.lines.append(text)
        return f"#{len(self.lines)}"

    def point(self, p: tuple[float, float, float]) -> str:
        return self.add(f"CARTESIAN_POINT('',({p[0]:.6f},{p[1]:.6f},{p[2]:.6f}));")

    def direction(self, d: tuple[float, float, float]) -> str:
        n = math.sqrt(sum(c * c for c in d))
        return self.add(f"DIRECTION('',({d[0] / n:.9f},{d[1] / n:.9f},{d[2] / n:.9f}));")


def prism_step(profile: tuple[tuple[float, float], ...] = PROFILE, depth: float = DEPTH,
               name: str = "bracket") -> str:
    """A STEP AP214 file of ``profile`` extruded by ``depth``: one closed shell of planar faces, in mm."""
    s = _Step()
    n = len(profile)
    bottom = [s.add(f"VERTEX_POINT('',{s.point((x, y, 0.0))});") for x, y in profile]
    top = [s.add(f"VERTEX_POINT('',{s.point((x, y, depth))});") for x, y in profile]

    def edge(v1: str, v2: str, a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
        d = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
        length = math.sqrt(sum(c * c for c in d))
        vec = s.add(f"VECTOR('',{s.direction(d)},{length:.6f});")
        line = s.add(f"LINE('',{s.point(a)},{vec});")
        return s.add(f"EDGE_CURVE('',{v1},{v2},{line},.T.);")

    pts = [(float(x), float(y)) for x, y in profile]
    e_bot = [edge(bottom[i], bottom[(i + 1) % n], (*pts[i], 0.0), (*pts[(i + 1) % n], 0.0)) for i in range(n)]
    e_top = [edge(top[i], top[(i + 1) % n], (*pts[i], depth), (*pts[(i + 1) % n], depth)) for i in range(n)]
    e_up = [edge(bottom[i], top[i], (*pts[i], 0.0), (*pts[i], depth)) for i in range(n)]

    def face(edges: list[tuple[str, bool]], origin: tuple[float, float, float],
             normal: tuple[float, float, float], ref: tuple[float, float, float]) -> str:
        oes = [s.add(f"ORIENTED_EDGE('',*,*,{e},{'.T.' if fwd else '.F.'});") for e, fwd in edges]
        loop = s.add(f"EDGE_LOOP('',({','.join(oes)}));")
        bound = s.add(f"FACE_OUTER_BOUND('',{loop},.T.);")
        place = s.add(f"AXIS2_PLACEMENT_3D('',{s.point(origin)},{s.direction(normal)},{s.direction(ref)});")
        plane = s.add(f"PLANE('',{place});")
        return s.add(f"ADVANCED_FACE('',({bound}),{plane},.T.);")

    faces = [face([(e_bot[i], False) for i in reversed(range(n))], (0, 0, 0), (0, 0, -1), (1, 0, 0)),
             face([(e_top[i], True) for i in range(n)], (0, 0, depth), (0, 0, 1), (1, 0, 0))]
    for i in range(n):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % n]
        faces.append(face([(e_bot[i], True), (e_up[(i + 1) % n], True), (e_top[i], False), (e_up[i], False)],
                          (x0, y0, 0.0), (y1 - y0, x0 - x1, 0.0), (x1 - x0, y1 - y0, 0.0)))
    shell = s.add(f"CLOSED_SHELL('',({','.join(faces)}));")
    solid = s.add(f"MANIFOLD_SOLID_BREP('{name}',{shell});")
    length_unit = s.add("( LENGTH_UNIT() NAMED_UNIT(*) SI_UNIT(.MILLI.,.METRE.) );")
    angle_unit = s.add("( NAMED_UNIT(*) PLANE_ANGLE_UNIT() SI_UNIT($,.RADIAN.) );")
    solid_angle = s.add("( NAMED_UNIT(*) SI_UNIT($,.STERADIAN.) SOLID_ANGLE_UNIT() );")
    unc = s.add(f"UNCERTAINTY_MEASURE_WITH_UNIT(LENGTH_MEASURE(1.E-07),{length_unit},'distance_accuracy_value',"
                "'confusion accuracy');")
    ctx = s.add(f"( GEOMETRIC_REPRESENTATION_CONTEXT(3) GLOBAL_UNCERTAINTY_ASSIGNED_CONTEXT(({unc})) "
                f"GLOBAL_UNIT_ASSIGNED_CONTEXT(({length_unit},{angle_unit},{solid_angle})) "
                "REPRESENTATION_CONTEXT('Context #1','3D Context with UNIT and UNCERTAINTY') );")
    world = s.add(f"AXIS2_PLACEMENT_3D('',{s.point((0, 0, 0))},{s.direction((0, 0, 1))},{s.direction((1, 0, 0))});")
    rep = s.add(f"ADVANCED_BREP_SHAPE_REPRESENTATION('',({world},{solid}),{ctx});")
    app_ctx = s.add("APPLICATION_CONTEXT('automotive design');")
    s.add(f"APPLICATION_PROTOCOL_DEFINITION('draft international standard','automotive_design',1998,{app_ctx});")
    prod_ctx = s.add(f"PRODUCT_CONTEXT('',{app_ctx},'mechanical');")
    product = s.add(f"PRODUCT('{name}','{name}','',({prod_ctx}));")
    s.add(f"PRODUCT_RELATED_PRODUCT_CATEGORY('part',$,({product}));")
    formation = s.add(f"PRODUCT_DEFINITION_FORMATION('','',{product});")
    pd_ctx = s.add(f"PRODUCT_DEFINITION_CONTEXT('part definition',{app_ctx},'design');")
    pd = s.add(f"PRODUCT_DEFINITION('design','',{formation},{pd_ctx});")
    pds = s.add(f"PRODUCT_DEFINITION_SHAPE('','',{pd});")
    s.add(f"SHAPE_DEFINITION_REPRESENTATION({pds},{rep});")
    body = "\n".join(f"#{i}={line}" for i, line in enumerate(s.lines, 1))
    return ("ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION(('Conveyor sample part'),'2;1');\n"
            f"FILE_NAME('{name}.step','2026-01-01T00:00:00',('conveyor'),('conveyor'),'conveyor_cad.samples',"
            "'conveyor_cad.samples','');\nFILE_SCHEMA(('AUTOMOTIVE_DESIGN { 1 0 10303 214 1 1 1 1 }'));\n"
            f"ENDSEC;\nDATA;\n{body}\nENDSEC;\nEND-ISO-10303-21;\n")


def _ear_clip(pts: list[tuple[float, float]]) -> list[tuple[int, int, int]]:
    """Triangles of a simple counter-clockwise polygon."""
    idx = list(range(len(pts)))
    tris: list[tuple[int, int, int]] = []

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    while len(idx) > 3:
        for k in range(len(idx)):
            i, j, m = idx[k - 1], idx[k], idx[(k + 1) % len(idx)]
            if cross(pts[i], pts[j], pts[m]) <= 0:
                continue
            if any(cross(pts[i], pts[j], pts[q]) >= 0 and cross(pts[j], pts[m], pts[q]) >= 0
                   and cross(pts[m], pts[i], pts[q]) >= 0 for q in idx if q not in (i, j, m)):
                continue
            tris.append((i, j, m))
            idx.pop(k)
            break
        else:
            raise ValueError("polygon is not simple and counter-clockwise")
    tris.append((idx[0], idx[1], idx[2]))
    return tris


def prism_stl(profile: tuple[tuple[float, float], ...] = PROFILE, depth: float = DEPTH,
              name: str = "bracket") -> bytes:
    """A binary STL of the same extruded profile, outward-facing triangles."""
    pts = [(float(x), float(y)) for x, y in profile]
    n = len(pts)
    tris: list[tuple[tuple[float, float, float], ...]] = []
    for i, j, m in _ear_clip(pts):
        tris.append(((*pts[i], depth), (*pts[j], depth), (*pts[m], depth)))
        tris.append(((*pts[i], 0.0), (*pts[m], 0.0), (*pts[j], 0.0)))
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        tris.append(((*a, 0.0), (*b, 0.0), (*b, depth)))
        tris.append(((*a, 0.0), (*b, depth), (*a, depth)))
    out = [f"{name} (Conveyor sample part)".encode().ljust(80, b" "), struct.pack("<I", len(tris))]
    for t in tris:
        u = [t[1][k] - t[0][k] for k in range(3)]
        v = [t[2][k] - t[0][k] for k in range(3)]
        nx, ny, nz = u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]
        norm = math.sqrt(nx * nx + ny * ny + nz * nz) or 1.0
        out.append(struct.pack("<12fH", nx / norm, ny / norm, nz / norm, *t[0], *t[1], *t[2], 0))
    return b"".join(out)


def write_samples(directory: Path) -> list[Path]:
    """Write ``bracket.step`` and ``bracket.stl`` into a directory."""
    directory.mkdir(parents=True, exist_ok=True)
    step = directory / "bracket.step"
    step.write_text(prism_step())
    stl = directory / "bracket.stl"
    stl.write_bytes(prism_stl())
    return [step, stl]


if __name__ == "__main__":
    for p in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "data")):
        print(p)
