"""The reference HTTP API (FastAPI): jobs, event streams, health and the routes plugins add.

Needs the ``api`` extra (``pip install 'conveyor-jobs[api]'``); the core imports without it.
``create_app(app)`` returns an ASGI application; ``conveyor api`` serves it with uvicorn.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from conveyor.app import Conveyor

INSTALL_HINT = "pip install 'conveyor-jobs[api]'"
#: import name → distribution, for the message naming what is missing
NEEDS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "jwt": "PyJWT", "httpx": "httpx"}


def require_extra() -> None:
    """Raise ConfigError naming the ``api`` extra if one of its packages is missing."""
    missing = [dist for mod, dist in NEEDS.items() if importlib.util.find_spec(mod) is None]
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        missing.append("python-multipart")
    if missing:
        raise ConfigError(f"the HTTP API needs {', '.join(missing)}: {INSTALL_HINT}")


def create_app(app: Conveyor | None = None) -> FastAPI:
    """The ASGI application serving ``app`` (default: a ``Conveyor()`` from the environment)."""
    require_extra()
    from conveyor.api.app import create_app as _create_app
    return _create_app(app)


__all__ = ["INSTALL_HINT", "create_app", "require_extra"]
