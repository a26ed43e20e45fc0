"""Scratch folders of conversions: named for the worker process that owns them, swept once that process is gone.

A worker killed mid-conversion cannot remove its folder; the next process on the host
that converts (at its first conversion) removes every ``conveyor-cad-<pid>-*`` folder of a
pid that no longer runs.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path

from conveyor_sandbox.common import pid_alive

log = logging.getLogger("conveyor.cad")

PREFIX = "conveyor-cad-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")
_swept = False
_lock = threading.Lock()


def sweep(root: str | None = None) -> list[str]:
    """Remove the scratch folders of processes that are gone; returns what was removed."""
    from conveyor_sandbox.cleanup import CleanupError, remove_tree
    base = Path(root or tempfile.gettempdir())
    removed = []
    for entry in base.iterdir() if base.is_dir() else ():
        m = _NAME.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        try:
            remove_tree(entry)
            removed.append(str(entry))
        except (CleanupError, OSError) as exc:
            log.warning("cannot remove the scratch folder %s of a dead worker: %s", entry, exc)
    if removed:
        log.info("swept %d scratch folder(s) of dead workers: %s", len(removed), ", ".join(removed))
    return removed


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A scratch folder of this process (the first call sweeps those of dead processes)."""
    global _swept
    with _lock:
        if not _swept:
            _swept = True
            sweep()
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")
