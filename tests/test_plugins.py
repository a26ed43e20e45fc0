"""Plugin loading: entry points, broken plugins reported by name, duplicates rejected, docs for every hook."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor import hookspecs
from conveyor.errors import ErrorCode, PluginError
from conveyor.kinds import JobKind
from conveyor.plugins import load_plugins
from conveyor.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "src" / "conveyor"
PLUGIN_PACKAGES = ("conveyor_cad", "conveyor_judge", "conveyor_sandbox")


def make_dist(site: Path, name: str, module_src: str, ep_name: str | None = None) -> None:
    """Install a tiny distribution by hand: a module plus a dist-info with a `conveyor` entry point."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_src))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[conveyor]\n{ep_name or name} = {name}\n")


def run_cli(args, site: Path, extra_env=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_builtin_kinds_load_through_entry_points():
    host = load_plugins()
    kinds = host.registry("job_kinds")
    assert {"conveyor.echo", "conveyor.sleep", "conveyor.fail"} <= set(kinds.keys())
    assert kinds.owner("conveyor.echo") == "builtin"
    info = {i.name: i for i in host.list()}["builtin"]
    assert info.distribution == "conveyor-jobs" and "conveyor_register_job_kinds" in info.hooks


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_work(tmp_path):
    make_dist(tmp_path, "broken_plugin", "raise ImportError('libfoo.so: cannot open shared object')\n")
    make_dist(tmp_path, "good_plugin", """
        from conveyor import hookimpl
        from conveyor.kinds import JobKind
        @hookimpl
        def conveyor_register_job_kinds(registry):
            registry.add(JobKind("good.kind", lambda ctx: 1))
    """)
    r = run_cli(["plugins", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    assert "libfoo.so" in plugins["broken_plugin"]["error"]
    assert plugins["good_plugin"]["error"] is None and plugins["builtin"]["error"] is None
    r = run_cli(["plugins"], tmp_path)
    assert "broken_plugin" in r.stdout and "FAILED" in r.stdout and "good.kind" in r.stdout


def test_a_plugin_whose_hook_raises_does_not_hide_the_others(tmp_path):
    make_dist(tmp_path, "raising_plugin", """
        from conveyor import hookimpl
        @hookimpl
        def conveyor_register_job_kinds(registry):
            raise RuntimeError("bad config")
    """)
    r = run_cli(["plugins", "--json"], tmp_path)
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    assert "bad config" in plugins["raising_plugin"]["error"]
    assert "conveyor.echo" in run_cli(["plugins"], tmp_path).stdout


def test_duplicate_registration_is_rejected_naming_both_plugins():
    reg: Registry[JobKind] = Registry("job kind")
    reg.current_plugin = "first"
    reg.add(JobKind("x.y", lambda c: None))
    reg.current_plugin = "second"
    with pytest.raises(PluginError, match=r"'x.y' from plugin 'second' is already registered by plugin 'first'"):
        reg.add(JobKind("x.y", lambda c: None))


def test_duplicate_kind_between_two_plugins_is_reported_and_first_kept(tmp_path):
    src = """
        from conveyor import hookimpl
        from conveyor.kinds import JobKind
        @hookimpl
        def conveyor_register_job_kinds(registry):
            registry.add(JobKind("conveyor.echo", lambda ctx: "impostor"))
    """
    make_dist(tmp_path, "impostor_plugin", src)
    r = run_cli(["plugins", "--json"], tmp_path)
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    assert "already registered" in plugins["impostor_plugin"]["error"]


def test_plugin_error_codes_join_the_catalog(tmp_path):
    make_dist(tmp_path, "codes_plugin", """
        from conveyor import hookimpl
        from conveyor.errors import ErrorCode
        @hookimpl
        def conveyor_error_codes():
            return [ErrorCode("widget_jammed", True, "The widget jammed.", "Unjam it.", source="codes_plugin")]
    """)
    r = run_cli(["errors", "--json"], tmp_path)
    codes = {c["code"]: c for c in json.loads(r.stdout)}
    assert codes["widget_jammed"]["source"] == "codes_plugin" and codes["widget_jammed"]["retryable"]
    assert "source_missing" in codes


def test_plugin_commands_join_the_launcher(tmp_path):
    make_dist(tmp_path, "cmd_plugin", """
        import click
        from conveyor import hookimpl
        @click.command("hello-plugin")
        def hello():
            click.echo("hello from a plugin")
        @hookimpl
        def conveyor_add_commands(cli):
            cli.add_command(hello)
    """)
    r = run_cli(["hello-plugin"], tmp_path)
    assert r.returncode == 0 and "hello from a plugin" in r.stdout


def test_catalog_has_the_documented_core_codes():
    from conveyor.errors import CATALOG, CORE_CODES
    for code in ("source_missing", "invalid_payload", "handler_not_found", "timeout", "lease_lost", "cancelled",
                 "internal_error"):
        entry = CATALOG.get(code)
        assert entry is not None and entry.meaning and entry.next_step and entry.source == "conveyor"
    with pytest.raises(ValueError, match="already defined"):
        CATALOG.add(ErrorCode("timeout", False, "other", "other", source="x"))
    # the domain's codes are the plugins': the core's own catalog names no converter, file or sandbox
    core = {c.code for c in CORE_CODES}
    assert not core & {"file_not_found", "missing_file_id", "unsupported_format", "connector_failed",
                       "conversion_failed", "sandbox_error"}
    catalog = load_plugins().catalog
    for code, source in (("file_not_found", "conveyor_cad"), ("missing_file_id", "conveyor_cad"),
                         ("unsupported_format", "conveyor_cad"), ("connector_failed", "conveyor_cad"),
                         ("conversion_failed", "conveyor_cad"), ("sandbox_error", "conveyor_sandbox")):
        entry = catalog.get(code)
        assert entry is not None and entry.meaning and entry.next_step and entry.source == source, code


def test_every_hook_is_documented_in_the_reference():
    """The core's hooks and those each first-party plugin declares (``conveyor_add_hookspecs``)."""
    import runpy
    gen = runpy.run_path(str(ROOT / "docs" / "reference" / "gen_hooks.py"))
    doc = (ROOT / "docs" / "reference" / "hooks.md").read_text()
    seen = []
    for module, _title in gen["modules"]():
        for name, fn in gen["hooks"](module):
            seen.append(name)
            assert f"## `{name}`" in doc, f"hook {name} has no entry in docs/reference/hooks.md"
            assert fn.__doc__ and ":return:" in fn.__doc__, f"hook {name} lacks its docstring contract"
    assert {n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("conveyor_")} <= set(seen)
    assert {"conveyor_register_sandboxes", "conveyor_register_judges", "conveyor_register_checkers",
            "conveyor_register_converters"} <= set(seen)
    assert doc == gen["render"](), "docs/reference/hooks.md is stale: run python docs/reference/gen_hooks.py"


def test_the_core_imports_no_plugin_module():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in PLUGIN_PACKAGES:
                    offenders.append(f"{path.relative_to(ROOT)}: {n}")
    assert offenders == []
    code = ("import sys, pkgutil, importlib, conveyor\n"
            "for m in pkgutil.walk_packages(conveyor.__path__, 'conveyor.'):\n"
            "    if m.name not in ('conveyor.__main__',):\n"
            "        importlib.import_module(m.name)\n"
            f"print(sorted(n for n in sys.modules if n.split('.')[0] in {PLUGIN_PACKAGES!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_hooks_go_through_pluggy_wrappers_and_monitoring_see_them_and_a_failure_stays_with_its_plugin():
    from conveyor import hookimpl
    from conveyor.plugins import load_plugins

    seen: list[str] = []

    class Good:
        @hookimpl
        def conveyor_environment(self):
            return ["CONVEYOR_GOOD_THING"]

    class Broken:
        @hookimpl
        def conveyor_environment(self):
            raise RuntimeError("bad config")

    class Wrapper:
        @hookimpl(wrapper=True)
        def conveyor_environment(self):
            seen.append("before")
            result = yield
            seen.append(f"after {len(result)}")
            return result

    def register(pm):
        for name, obj in (("good", Good()), ("broken", Broken()), ("wrapper", Wrapper())):
            pm.register(obj, name=name)
        pm.add_hookcall_monitoring(lambda hook, impls, kwargs: seen.append(f"call {hook}"),
                                   lambda outcome, hook, impls, kwargs: None)

    host = load_plugins(entry_points=False, register=register)
    assert host.call_each("conveyor_environment") == [["CONVEYOR_GOOD_THING"]]
    assert seen == ["call conveyor_environment", "before", "after 1"]
    assert host.errors == {"broken": "conveyor_environment: RuntimeError: bad config"}
    seen.clear()
    answers = list(host.each_plugin("conveyor_environment", lambda plugin: {}))
    assert seen.count("before") == 2  # the wrapper wraps each plugin's call too
    assert sorted(answers) == [("broken", None, "conveyor_environment: RuntimeError: bad config"),
                               ("good", ["CONVEYOR_GOOD_THING"], None)]


# ---------------------------------------------------------------- families: open to third parties

def test_a_third_party_declares_a_family_and_another_plugin_fills_it():
    """A family is not the core's to list: a plugin declares one with its hook, any plugin adds to it."""
    import types

    from conveyor import hookimpl
    from conveyor.plugin_api import Family, Registry, hookspec

    class Printer:
        def __init__(self, id: str) -> None:
            self.id = id

    class PrinterRegister(Registry[Printer]):
        def check(self, item: object) -> None:
            if not isinstance(item, Printer):
                raise PluginError(f"{item!r} is not a Printer")

    printers: Family[Printer] = Family("printers", "conveyor_register_printers", PrinterRegister, "printing")
    specs = types.ModuleType("printing_specs")

    @hookspec
    def conveyor_register_printers(registry: PrinterRegister) -> None:
        """Register printers. :return: nothing."""

    specs.conveyor_register_printers = conveyor_register_printers  # type: ignore[attr-defined]

    class Declares:
        @hookimpl
        def conveyor_add_hookspecs(self, pluginmanager):
            pluginmanager.add_hookspecs(specs)

        @hookimpl
        def conveyor_families(self):
            return [printers]

    class Adds:
        @hookimpl
        def conveyor_register_printers(self, registry):
            registry.add(Printer("laser"))

    class AddsJunk:
        @hookimpl
        def conveyor_register_printers(self, registry):
            registry.add("not a printer")

    def register(pm):
        pm.register(Adds(), name="adds")  # before the spec exists: checked when it is added
        pm.register(Declares(), name="printing")
        pm.register(AddsJunk(), name="junk")

    host = load_plugins(entry_points=False, register=register)
    reg = host.registry(printers)
    assert reg.keys() == ["laser"] and reg.owner("laser") == "adds"
    assert host.registry("printers") is reg
    assert "printers" in host.families() and "job_kinds" in host.families()
    assert "is not a Printer" in host.errors["junk"]  # the register type refused it; the rest kept working


def test_an_unknown_family_names_the_known_ones():
    host = load_plugins(entry_points=False)
    with pytest.raises(PluginError, match=r"no loaded plugin declares the registry family 'convertors' "
                                          r"\(known: job_kinds\)"):
        host.registry("convertors")


def test_first_party_families_are_declared_by_their_plugins_and_check_what_they_get():
    from conveyor_cad.hookspecs import CONVERTERS
    from conveyor_sandbox.hookspecs import SANDBOXES

    host = load_plugins()
    assert {"job_kinds", "sandboxes", "judges", "checkers", "converters"} <= set(host.families())
    assert host.families()["converters"].source == "conveyor_cad"
    assert "mesh" in host.registry(CONVERTERS) and "c-sandbox" in host.registry(SANDBOXES)
    reg = CONVERTERS.new_registry()
    with pytest.raises(PluginError, match="lacks id, formats, convert"):
        reg.add(object())


def test_a_plugin_redefining_a_code_is_reported_and_the_catalog_is_per_host():
    from conveyor import hookimpl
    from conveyor.errors import CATALOG

    class Redefines:
        @hookimpl
        def conveyor_error_codes(self):
            return [ErrorCode("timeout", False, "Something else.", "Nothing.", source="redefines"),
                    ErrorCode("redefines_own", False, "Its own code.", "Read it.", source="redefines")]

    host = load_plugins(entry_points=False, register=lambda pm: pm.register(Redefines(), name="redefines"))
    catalog = host.catalog
    assert "already defined" in host.errors["redefines"]
    assert catalog.get("timeout") == CATALOG.get("timeout") and catalog.is_retryable("timeout")
    assert "redefines_own" in catalog
    # the process-wide catalog is the core's alone: another host never sees this plugin's codes
    assert "redefines_own" not in CATALOG and "redefines_own" not in load_plugins(entry_points=False).catalog


def test_a_plugin_history_that_cannot_run_is_reported_and_the_others_applied(tmp_path):
    from sqlalchemy import MetaData

    from conveyor import hookimpl
    from conveyor.migrate import Migrations

    class Broken:
        @hookimpl
        def conveyor_migrations(self):
            return [Migrations("ghost", "no_such_package_here", "conveyor_ghost_schema_version", MetaData(), "g1"),
                    Migrations("jobs", "conveyor.migrations", "conveyor_other_version", MetaData(), "x", "jobs"),
                    Migrations("Bad Name; drop", "conveyor.migrations", "v", MetaData(), "x", "jobs")]

    host = load_plugins(entry_points=False, register=lambda pm: pm.register(Broken(), name="broken"))
    assert host.migrations() == ()
    error = host.errors["broken"]
    assert "'ghost'" in error and "install the plugin's distribution" in error
    assert "history 'jobs'" in error and "clashes" in error
    assert "lower-case identifiers" in error
