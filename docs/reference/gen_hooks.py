"""Regenerate docs/reference/hooks.md from the hook specifications: python docs/reference/gen_hooks.py

The core's (``conveyor.hookspecs``) and those each first-party plugin declares with
``conveyor_add_hookspecs`` (``conveyor_sandbox.hookspecs``, ``conveyor_judge.hookspecs``,
``conveyor_cad.hookspecs``).
"""

import importlib
import inspect
from pathlib import Path
from types import ModuleType

#: (module, title of its part of the page) of every hook specification module
MODULES = (
    ("conveyor.hookspecs", None),
    ("conveyor_sandbox.hookspecs", "Hooks the sandbox plugin declares (`conveyor-sandbox`)"),
    ("conveyor_judge.hookspecs", "Hooks the judge plugin declares (`conveyor-judge`)"),
    ("conveyor_cad.hookspecs", "Hooks the CAD plugin declares (`conveyor-cad`)"),
)


def modules() -> list[tuple[ModuleType, str | None]]:
    """Each hook specification module with its part's title."""
    return [(importlib.import_module(name), title) for name, title in MODULES]


def hooks(module: ModuleType) -> list[tuple[str, object]]:
    """The hook specifications a module declares (not those it imports)."""
    return [(n, fn) for n, fn in inspect.getmembers(module, inspect.isfunction)
            if n.startswith("conveyor_") and fn.__module__ == module.__name__]

HEADER = """# Hook reference

Every hook the core calls is declared in `conveyor/hookspecs.py`; a plugin that defines a
family of items (sandboxes, judge languages and checkers, converters) declares that family's
hooks in its own `hookspecs` module and adds them with `conveyor_add_hookspecs`. This page is
generated from all of those declarations (`python docs/reference/gen_hooks.py`), and a test
fails when a hook has no entry here. Implement a hook with `@conveyor.hookimpl` in a module exposed through the
`conveyor` entry-point group:

```toml
# your plugin's pyproject.toml
[project.entry-points.conveyor]
myplugin = "myplugin.hooks"
```

Error policy at every hook: an exception raised by one plugin is caught, logged with the
plugin's name and shown by `conveyor plugins`; the other plugins keep working.
First-party plugins register first, so a third party cannot shadow a built-in id.
"""


def render() -> str:
    out = [HEADER]
    for module, title in modules():
        if title:
            out += [f"# {title}", "", f"Declared in `{module.__name__}`.", ""]
        out += _render(module)
    return "\n".join(out)


def _render(module: ModuleType) -> list[str]:
    out: list[str] = []
    for name, fn in hooks(module):
        opts = getattr(fn, "conveyor_spec", {}) or {}
        out += [f"## `{name}`", "", "```python", f"def {name}{inspect.signature(fn)}".replace("'", ""), "```", ""]
        flags = []
        if opts.get("firstresult"):
            flags.append("first result wins")
        if opts.get("historic"):
            flags.append("historic: plugins registered later are called too")
        if flags:
            out += ["*" + "; ".join(flags) + "*", ""]
        out += [inspect.cleandoc(fn.__doc__ or ""), ""]
    return out


if __name__ == "__main__":
    Path(__file__).with_name("hooks.md").write_text(render())
