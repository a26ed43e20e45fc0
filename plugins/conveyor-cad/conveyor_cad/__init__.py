"""Conveyor's first-party CAD converters: files, previews, geometry and connectors."""

from conveyor_cad.converter import Converter, ConvertOptions, require
from conveyor_cad.records import ConversionError, ConversionStatus, ConvertOutput, Stage

__all__ = ["ConversionError", "ConversionStatus", "ConvertOptions", "ConvertOutput", "Converter", "Stage", "require"]
