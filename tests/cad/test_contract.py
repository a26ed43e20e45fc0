"""The first-party converters pass the same contract third-party converters subclass."""

from __future__ import annotations

from pathlib import Path

import ezdxf
import trimesh

from conveyor_cad.brep import BrepConverter
from conveyor_cad.dxf import DxfConverter
from conveyor_cad.mesh import MeshConverter
from conveyor_cad.samples import sample_path
from conveyor_cad.testing import ConverterContract


class TestMeshConverterContract(ConverterContract):
    converter = MeshConverter()
    format = "ply"

    def make_good_file(self, directory: Path) -> Path:
        p = directory / "capsule.ply"
        p.write_bytes(trimesh.creation.capsule(height=4.0, radius=1.0).export(file_type="ply"))
        return p


class TestBrepConverterContract(ConverterContract):
    converter = BrepConverter()
    format = "step"

    def make_good_file(self, directory: Path) -> Path:
        return sample_path("bracket.step")


class TestDxfConverterContract(ConverterContract):
    converter = DxfConverter()
    format = "dxf"

    def make_good_file(self, directory: Path) -> Path:
        doc = ezdxf.new()
        msp = doc.modelspace()
        msp.add_circle((0, 0), 10)
        msp.add_line((-12, 0), (12, 0))
        p = directory / "circle.dxf"
        doc.saveas(p)
        return p
