"""Preloaded by the conversion fork server: the libraries every conversion child would import again."""

from __future__ import annotations

import gc
import importlib
import os

os.environ.setdefault("MPLBACKEND", "Agg")

for _name in ("numpy", "PIL.Image", "trimesh", "matplotlib.figure", "matplotlib.backends.backend_agg",
              "matplotlib.collections", "ezdxf", "ezdxf.addons.drawing.matplotlib", "conveyor_cad.mesh",
              "conveyor_cad.dxf", "conveyor_cad.render", "conveyor_cad.convert_child",
              # a child re-runs the parent's main script (multiprocessing's rule for scripts run by path):
              # with what a worker's main imports already here, that costs dict lookups, not imports
              "sqlalchemy", "click", "rich.console", "conveyor.app", "conveyor.cli", "conveyor.worker",
              "conveyor.outbox", "conveyor.runner"):
    try:
        importlib.import_module(_name)
    except Exception:  # a missing library is reported by the converter that needs it, in its child
        pass

# children are forked from this process: keep the collector off the inherited heap, or every
# collection in a child touches (and so copies) all of its pages
gc.freeze()
