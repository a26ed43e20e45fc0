"""The judge families' contract: languages and checkers, their hooks and registries, declared by this plugin.

The judge plugin adds these hooks to every plugin manager (``conveyor_add_hookspecs``) and
declares the families (``conveyor_families``); any plugin may then add a language or a
checker, and the judge reads them with ``host.registry(LANGUAGES)`` and ``(CHECKERS)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import Family, PluginError, Registry, hookspec

if TYPE_CHECKING:
    from conveyor_judge.checkers import Checker
    from conveyor_judge.languages import Language


class LanguageRegister(Registry["Language"]):
    """The register ``conveyor_register_judges`` receives: language specs keyed by ``id``."""

    def check(self, item: Any) -> None:
        """A language has a string ``id``, a ``run`` command and ``available()``."""
        missing = [a for a in ("id", "run", "available") if not hasattr(item, a)]
        if missing:
            raise PluginError(f"judge language {item!r} lacks {', '.join(missing)} "
                              "(see conveyor_judge.languages.Language)")


class CheckerRegister(Registry["Checker"]):
    """The register ``conveyor_register_checkers`` receives: output checkers keyed by ``id``."""

    def check(self, item: Any) -> None:
        """A checker has a string ``id`` and ``check(...)``."""
        missing = [a for a in ("id", "check") if not hasattr(item, a)]
        if missing:
            raise PluginError(f"checker {item!r} lacks {', '.join(missing)} (see conveyor_judge.checkers.Checker)")


LANGUAGES: Family[Language] = Family("judges", "conveyor_register_judges", LanguageRegister, "conveyor_judge")
CHECKERS: Family[Checker] = Family("checkers", "conveyor_register_checkers", CheckerRegister, "conveyor_judge")


@hookspec
def conveyor_register_judges(registry: LanguageRegister) -> None:
    """Register judge language specs: ``registry.add(language)`` keyed by language id.

    :param registry: the language register; duplicate ids are rejected.
    :return: nothing; every implementation is called.
    """


@hookspec
def conveyor_register_checkers(registry: CheckerRegister) -> None:
    """Register output checkers: ``registry.add(checker)`` keyed by checker id.

    :param registry: the checker register; duplicate ids are rejected.
    :return: nothing; every implementation is called.
    """
