"""Conveyor: durable background jobs whose work is done by plugins."""

from conveyor.errors import ErrorCode, JobError
from conveyor.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["ErrorCode", "JobError", "__version__", "hookimpl"]
