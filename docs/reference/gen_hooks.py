"""Regenerate docs/reference/hooks.md from conveyor/hookspecs.py: python docs/reference/gen_hooks.py"""

import inspect
from pathlib import Path

from conveyor import hookspecs

HEADER = """# Hook reference

Every hook Conveyor calls is declared in `conveyor/hookspecs.py`; this page is generated from
those declarations (`python docs/reference/gen_hooks.py`) and a test fails when a hook has no
entry here. Implement a hook with `@conveyor.hookimpl` in a module exposed through the
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
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("conveyor_"):
            continue
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
    return "\n".join(out)


if __name__ == "__main__":
    Path(__file__).with_name("hooks.md").write_text(render())
