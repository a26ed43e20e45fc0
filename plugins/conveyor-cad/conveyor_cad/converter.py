"""The converter contract: what a plugin registers through ``conveyor_register_converters``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from conveyor_cad.records import ConversionError, ConvertOutput, Stage

EXTRA = "cad"


@dataclass(frozen=True)
class ConvertOptions:
    """What the job asks of a converter."""

    format: str
    filename: str
    preview_size: int = 512
    #: meshing tolerance of B-rep converters, relative to edge length
    linear_tolerance: float = 0.1
    angular_tolerance: float = 0.5
    tenant: str = "default"
    org: str | None = None
    #: full storage URL of the input (connectors may hand a presigned form of it to a service)
    source_url: str | None = None
    #: a time-limited http(s) URL of the input, when storage can presign one (S3)
    source_signed_url: str | None = None
    #: entities a converter may create by expanding references (DXF block inserts, MINSERT arrays)
    max_expanded_entities: int = 200_000


class Converter:
    """Base class of a converter: declare formats, extensions and magic, implement ``convert``.

    ``convert`` runs in a child process with time and memory limits (unless
    ``isolated`` is False), normally in a sandbox box that sees only the input, its output
    folder and the Python installation, so the instance must pickle: keep it to plain
    attributes, and read nothing but ``source`` (and files beside it).
    """

    id: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    formats: ClassVar[tuple[str, ...]] = ()
    extensions: ClassVar[tuple[str, ...]] = ()
    #: byte prefixes that identify this converter's inputs (for formats Conveyor does not sniff itself)
    magic: ClassVar[tuple[bytes, ...]] = ()
    #: whether this converter writes 3D geometry (a 2D drawing converter does not)
    produces_geometry: ClassVar[bool] = True
    #: run in a child process with rlimits; False for converters that only talk to services
    isolated: ClassVar[bool] = True
    #: a converter that recognises but cannot read its format ends as ``unsupported``
    supported: ClassVar[bool] = True
    description: ClassVar[str] = ""
    #: top-level modules the converter imports from outside site-packages, made readable in its sandbox box
    #: (its own module, ``conveyor`` and ``conveyor_cad`` always are)
    sandbox_modules: ClassVar[tuple[str, ...]] = ()

    def accepts(self, fmt: str) -> bool:
        """Whether this converter takes the format id."""
        return fmt in self.formats

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Read ``source``, write ``model.glb``/``preview.png`` into ``out_dir``; raise ConversionError on bad input."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Plain-JSON summary for ``conveyor cad formats``."""
        return {"id": self.id, "version": self.version, "formats": list(self.formats),
                "extensions": list(self.extensions), "isolated": self.isolated, "supported": self.supported,
                "produces_geometry": self.produces_geometry, "description": self.description}


def require(module: str, extra: str = EXTRA, package: str | None = None) -> Any:
    """Import a converter's library, or raise ``missing_dependency`` naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConversionError(
            "missing_dependency",
            f"{package or module} is not installed ({exc}); install it with "
            f"pip install 'conveyor-jobs[{extra}]'", Stage.READ) from None
