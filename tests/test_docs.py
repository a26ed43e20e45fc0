"""The reference pages cover the code: every core command, setting and error code; no broken links."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import click
import pytest

from conveyor.cli import cli
from conveyor.config import Settings
from conveyor.errors import CATALOG, CORE_CODES
from conveyor.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CORE_CLI_MODULE = "conveyor.cli"
#: pages other parts of the project own; links to them are checked once they exist
PAGES_OWNED_ELSEWHERE = {"docs/sandbox.md", "docs/redis.md", "docs/s3.md"}


def _core_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the launcher's commands defined in conveyor.cli (plugin commands are skipped)."""
    out = []
    for name, cmd in sorted(group.commands.items()):
        if getattr(cmd.callback, "__module__", None) != CORE_CLI_MODULE:
            continue  # added by a plugin through conveyor_add_commands
        path = (*prefix, name)
        out.append(path)
        if isinstance(cmd, click.Group):
            out += _core_commands(cmd, path)
    return out


def test_every_core_command_is_in_the_cli_reference():
    doc = (DOCS / "reference" / "cli.md").read_text()
    paths = _core_commands(cli)
    assert ("jobs", "show") in paths and ("db", "init") in paths and ("queue", "pressure") in paths
    missing = [" ".join(p) for p in paths if f"`conveyor {' '.join(p)}`" not in doc]
    assert missing == [], f"commands without a mention in docs/reference/cli.md: {missing}"


def test_every_core_option_is_in_the_cli_reference():
    doc = (DOCS / "reference" / "cli.md").read_text()
    missing = []
    for path in _core_commands(cli):
        cmd: click.Command = cli
        for name in path:
            cmd = cmd.commands[name]  # type: ignore[attr-defined]
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    if opt.startswith("--") and f"`{opt}" not in doc and f" {opt}" not in doc:
                        missing.append(f"conveyor {' '.join(path)} {opt}")
    assert missing == []


def _env_name(name: str) -> str:
    return "CONVEYOR_" + name.upper()


def test_every_setting_is_in_the_config_reference():
    doc = (DOCS / "reference" / "config.md").read_text()
    names = [f.name for f in fields(Settings) if f.name != "sources"]
    assert "stream_key" in names
    missing = [n for n in names if f"`{_env_name(n)}`" not in doc or f"`{n}`" not in doc]
    assert missing == [], f"settings without an entry in docs/reference/config.md: {missing}"


def test_every_error_code_is_in_the_error_reference():
    doc = (DOCS / "reference" / "errors.md").read_text()
    codes = [c.code for c in CATALOG if c.source == "conveyor"] + [c.code for c in CORE_CODES]
    missing = sorted({c for c in codes if f"## `{c}`" not in doc})
    plugin_codes = [c.code for c in load_plugins().catalog if c.source != "conveyor"]
    assert {"sandbox_error", "conversion_failed", "file_not_found"} <= set(plugin_codes)
    missing += sorted({c for c in plugin_codes if f"| `{c}` |" not in doc})
    assert missing == [], f"codes without an entry in docs/reference/errors.md: {missing}"


def test_error_reference_is_up_to_date_with_its_generator():
    import runpy
    gen = runpy.run_path(str(DOCS / "reference" / "gen_errors.py"))
    assert gen["render"]() == (DOCS / "reference" / "errors.md").read_text(), \
        "docs/reference/errors.md is stale: run python docs/reference/gen_errors.py"


# ---------------------------------------------------------------- links

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [m.group(1) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_pages_and_headings(page):
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("//"):
            continue  # http:, https:, mailto:
        target, _, anchor = link.partition("#")
        dest = (page.parent / target).resolve() if target else page
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if rel not in PAGES_OWNED_ELSEWHERE:
                broken.append(f"{link}: no file {rel}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{link}: no heading #{anchor} in {rel}")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_readme_links_to_the_core_pages():
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/tutorial.md", "docs/howto/job-kind.md", "docs/howto/plugin.md", "docs/reference/cli.md",
                 "docs/reference/config.md", "docs/reference/errors.md", "docs/operations.md"):
        assert f"]({page})" in readme, f"README.md does not link {page}"
        assert (ROOT / page).is_file()
