"""``conveyor.plugin_api`` is the whole surface a plugin uses: first-party plugins import nothing else of the core."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import conveyor.plugin_api as api
import conveyor.plugin_api.http as http

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SOURCES = sorted(p.parent for p in (ROOT / "plugins").glob("conveyor-*/conveyor_*/__init__.py"))
ALLOWED = {"conveyor.plugin_api", "conveyor.plugin_api.http"}


def _core_imports(path: Path) -> list[str]:
    """``module[:name]`` of each import of the core (``conveyor`` or ``conveyor.*``) in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "conveyor"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "conveyor" \
                and node.level == 0:
            found += [f"{node.module}:{a.name}" for a in node.names]
    return found


def test_first_party_plugins_import_the_core_only_through_plugin_api():
    assert [p.name for p in PLUGIN_SOURCES] == ["conveyor_cad", "conveyor_judge", "conveyor_sandbox"]
    example = ROOT / "examples" / "conveyor-cad-gts" / "src" / "conveyor_cad_gts"  # a third party's, held alike
    offenders = []
    for pkg in [*PLUGIN_SOURCES, example]:
        for path in sorted(pkg.rglob("*.py")):
            for imp in _core_imports(path):
                if imp.split(":")[0] not in ALLOWED:
                    offenders.append(f"{path.relative_to(ROOT)}: {imp}")
    assert offenders == [], "plugins reach into the core; add the name to conveyor.plugin_api or use a hook:\n" \
        + "\n".join(offenders)


def test_the_check_sees_a_plugin_that_reaches_in(tmp_path):
    """The scan above is not vacuous: it finds each form of reaching in."""
    src = tmp_path / "bad.py"
    src.write_text("import conveyor.store\nfrom conveyor.schema import jobs\nfrom conveyor import hookimpl\n"
                   "from conveyor.plugin_api import JobError\n")
    assert _core_imports(src) == ["conveyor.store", "conveyor.schema:jobs", "conveyor:hookimpl",
                                  "conveyor.plugin_api:JobError"]


@pytest.mark.parametrize("module", [api, http], ids=["plugin_api", "plugin_api.http"])
def test_every_name_listed_resolves(module):
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_lazy_table_and_the_list_agree():
    assert set(api._WHERE) == set(api.__all__)
    for name, where in api._WHERE.items():
        assert getattr(importlib.import_module(where), name) is getattr(api, name)


def test_a_name_outside_the_surface_is_refused_with_the_reason():
    with pytest.raises(AttributeError, match="not part of what plugins may use"):
        api.__getattr__("_fields")
    with pytest.raises(ImportError):
        exec("from conveyor.plugin_api import submit_many", {})


def test_importing_one_name_loads_only_what_it_needs():
    """A converter module in a conversion's box imports JobError: not the worker, the API or SQLAlchemy."""
    code = ("import sys\nfrom conveyor.plugin_api import JobError, hookimpl\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'fastapi') "
            "or m in ('conveyor.worker', 'conveyor.app', 'conveyor.cli')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
