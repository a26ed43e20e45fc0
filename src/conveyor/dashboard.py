"""What a plugin adds to the web dashboard (``conveyor_ui_pages``): a page, as a JavaScript module it ships."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: a page's name: its address is ``/ui/#/p/NAME``
PAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class UiPage:
    """One dashboard page a plugin adds.

    ``script`` is an ES module file in the plugin's package; the files of its folder are
    served at ``/ui/plugin/NAME/`` (by name, scripts, styles and pictures only). The module
    exports ``render({ main, path, query })``: it draws into ``main`` (the page's element),
    reads the API with ``api`` from ``/ui/static/kit.js`` and may return a function that
    closes what it opened (event streams, timers) when the user leaves the page.
    """

    name: str
    title: str
    script: Path
    order: int = 100

    def problem(self) -> str | None:
        """What is wrong with this page, or None."""
        if not PAGE_NAME.match(self.name):
            return f"page name {self.name!r} must be 1-40 of a-z, 0-9 and '-', starting with a letter or digit"
        if not self.title or len(self.title) > 40:
            return f"page {self.name!r}: the title must be 1-40 characters"
        if self.script.suffix != ".js" or not self.script.is_file():
            return f"page {self.name!r}: script {self.script} is not a .js file that exists"
        return None
