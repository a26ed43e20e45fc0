"""Preloaded by the conversion fork server: the libraries every conversion child would import again."""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("MPLBACKEND", "Agg")

for _name in ("numpy", "PIL.Image", "trimesh", "matplotlib.figure", "matplotlib.backends.backend_agg",
              "matplotlib.collections", "ezdxf", "ezdxf.addons.drawing.matplotlib", "conveyor_cad.mesh",
              "conveyor_cad.dxf", "conveyor_cad.render", "conveyor_cad.convert_child"):
    try:
        importlib.import_module(_name)
    except Exception:  # a missing library is reported by the converter that needs it, in its child
        pass
