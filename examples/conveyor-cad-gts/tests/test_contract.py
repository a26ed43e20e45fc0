"""The GTS converter passes Conveyor's converter contract."""

from __future__ import annotations

from pathlib import Path

from conveyor_cad_gts.converter import GtsConverter

from conveyor_cad.testing import ConverterContract

DATA = Path(__file__).parent / "data"


class TestGtsConverter(ConverterContract):
    converter = GtsConverter()
    format = "gts"

    def make_good_file(self, directory: Path) -> Path:
        return DATA / "tetra.gts"

    def make_garbage_file(self, directory: Path) -> Path:
        p = directory / "garbage.gts"
        p.write_text("3 3 1\n0 0 0\n1 x 0\n")
        return p
