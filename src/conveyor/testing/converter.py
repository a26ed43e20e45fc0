"""``ConverterContract``: contract tests for CAD converters (``class TestMine(ConverterContract)``).

The suite belongs to the CAD converter family, which the first-party ``conveyor_cad``
plugin defines; it is resolved on first use so that importing the core never imports a
plugin. See docs/cad.md, "Write a converter".
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "ConverterContract":
        try:
            return importlib.import_module("conveyor_cad.contract").ConverterContract
        except ImportError as exc:
            raise ImportError(f"ConverterContract needs the CAD plugin: pip install 'conveyor-jobs[cad]' ({exc})") \
                from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
