"""Schema migrations (Alembic): bring a job database, or a control database, to this release's schema.

Each history (``Migrations``) has its own version table, so none meets another's or a
host application's own ``alembic_version``:

- ``jobs`` (``conveyor_schema_version``): the job store's tables, in every job database;
- ``control`` (``conveyor_control_schema_version``): the tenant registry, only in the
  control database of a database-per-tenant deployment (which has the job tables too);
- one per plugin that has tables (``conveyor_migrations`` hook; the CAD plugin's ``cad``
  history holds ``conveyor_files``), applied after ``jobs`` to every job database.

The first revision of each history creates only the tables a database lacks, so a
database made before migrations existed (by ``create_all``) is brought up to date by
the same ``upgrade``. On PostgreSQL all pending revisions run in one transaction under
an advisory lock: two processes upgrading at once run them once, and a failure leaves
the database as it was.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, inspect, text

from conveyor.db import connection
from conveyor.errors import SchemaTooNew
from conveyor.schema import control_metadata, metadata

_SCRIPTS: dict[str, Any] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SCRIPTS_LOCK = threading.Lock()
#: Alembic's ``context`` is one module-level proxy: one upgrade at a time per process
_UPGRADE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Migrations:
    """One schema history: its Alembic scripts, version table, tables and newest revision."""

    #: the history's name (``db status``, ``applied cad c0001``); unique in a deployment
    name: str
    #: the importable package whose folder (or its ``folder`` below) holds ``env.py``,
    #: ``script.py.mako`` and ``versions/``
    package: str
    #: the table Alembic records the history's revision in: ``conveyor_<name>_schema_version``
    version_table: str
    #: the history's tables as the code uses them (``db status`` compares the database with it)
    metadata: MetaData
    #: the newest revision, so that a cheap check needs no Alembic (a test compares it with the scripts)
    head: str
    folder: str = ""

    def location(self) -> str:
        """The folder of the history's scripts."""
        root = files(self.package)
        return str(root / self.folder if self.folder else root)

    def problem(self) -> str | None:
        """Why the history cannot be run (its scripts are not where it says), or None."""
        if not _NAME.match(self.name) or not _NAME.match(self.version_table):
            return "name and version_table must be lower-case identifiers (letters, digits, '_')"
        try:
            where = Path(self.location())
        except (ImportError, TypeError) as exc:
            return f"package {self.package!r} cannot be imported ({exc}); install the plugin's distribution"
        missing = [n for n in ("env.py", "script.py.mako", "versions") if not (where / n).exists()]
        if missing:
            return f"{where} lacks {', '.join(missing)}; ship the folder as package data"
        return None


JOBS = Migrations("jobs", "conveyor.migrations", "conveyor_schema_version", metadata, "0003", "jobs")
CONTROL = Migrations("control", "conveyor.migrations", "conveyor_control_schema_version", control_metadata,
                     "c0001", "control")
#: the core's histories by name
CORE = {JOBS.name: JOBS, CONTROL.name: CONTROL}


@dataclass(frozen=True)
class Revision:
    """One migration of a history."""

    history: str
    revision: str
    title: str

    def __str__(self) -> str:
        return f"{self.history} {self.revision} ({self.title})"


@dataclass(frozen=True)
class SchemaState:
    """Where one history of a database stands."""

    history: str
    current: str | None  # None: no version table yet
    head: str
    pending: tuple[Revision, ...]

    @property
    def up_to_date(self) -> bool:
        """Whether no revision is left to apply."""
        return not self.pending


def histories(control: bool, plugins: Sequence[Migrations] = ()) -> tuple[Migrations, ...]:
    """The histories a database has: the job store's, the plugins' and, with ``control``, the control database's."""
    return (JOBS, *plugins, CONTROL) if control else (JOBS, *plugins)


def _script(history: Migrations) -> Any:
    """The history's Alembic script directory, loaded once per process."""
    with _SCRIPTS_LOCK:
        script = _SCRIPTS.get(history.name)
        if script is None:
            from alembic.script import ScriptDirectory
            where = history.location()
            script = ScriptDirectory(where, version_locations=[f"{where}/versions"])
            _SCRIPTS[history.name] = script
        return script


def head(history: Migrations | str) -> str:
    """The newest revision of a history, read from its scripts."""
    rev = _script(CORE[history] if isinstance(history, str) else history).get_current_head()
    assert rev is not None
    return str(rev)


def current(bind: Engine | Connection, history: Migrations = JOBS) -> str | None:
    """The revision a database's history is at; None before its first upgrade."""
    with connection(bind) as conn:
        if not inspect(conn).has_table(history.version_table):
            return None
        row = conn.execute(text(f"SELECT version_num FROM {history.version_table}")).first()
        return str(row[0]) if row else None


def behind(bind: Engine | Connection, *, control: bool = False, plugins: Sequence[Migrations] = ()
           ) -> list[tuple[str, str | None, str]]:
    """``(history, current, head)`` of each history not at this release's head; cheap (no Alembic)."""
    out = []
    for h in histories(control, plugins):
        cur = current(bind, h)
        if cur != h.head:
            out.append((h.name, cur, h.head))
    return out


def state(bind: Engine | Connection, *, control: bool = False, plugins: Sequence[Migrations] = ()
          ) -> list[SchemaState]:
    """Each history's current revision, head and pending revisions (reads only)."""
    out = []
    for h in histories(control, plugins):
        cur = current(bind, h)
        out.append(SchemaState(h.name, cur, head(h), tuple(_pending(h, cur))))
    return out


def _pending(history: Migrations, cur: str | None) -> Iterator[Revision]:
    script = _script(history)
    _known(history, cur)
    revs = list(script.iterate_revisions("head", cur or "base"))
    for r in reversed(revs):
        yield Revision(history.name, str(r.revision), _title(r))


def _known(history: Migrations, cur: str | None) -> None:
    """SchemaTooNew when the database is at a revision this release does not have."""
    from alembic.util import CommandError

    if cur is None:
        return
    try:
        _script(history).get_revision(cur)
    except CommandError:
        raise SchemaTooNew(f"the database's {history.name} schema is at revision {cur!r}, which this release "
                           f"(head {head(history)!r}) does not have: a newer Conveyor upgraded it; run that "
                           "release, or restore a backup taken before the upgrade") from None


def _title(rev: Any) -> str:
    return (rev.doc or "").strip().splitlines()[0] if rev.doc else str(rev.revision)


def upgrade(engine: Engine, *, control: bool = False, to: str = "head", plugins: Sequence[Migrations] = ()
            ) -> list[Revision]:
    """Apply every pending revision (safe to run again, and from many processes at once); returns those applied.

    ``to`` names a revision of the ``jobs`` history; the other histories go to their heads.
    """
    applied: list[Revision] = []
    for h in histories(control, plugins):
        applied += _upgrade(engine, h, to if h is JOBS else "head")
    return applied


def _upgrade(engine: Engine, history: Migrations, to: str) -> list[Revision]:
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    script = _script(history)
    done: list[Revision] = []

    def step(rev: Any, context: Any) -> Any:
        for r in rev or ():
            _known(history, str(r))
        # what alembic.command.upgrade does, on a script directory loaded once per process
        steps = script._upgrade_revs(to, rev)
        done.extend(Revision(history.name, str(s.revision.revision), _title(s.revision)) for s in steps)
        return steps

    with _UPGRADE_LOCK, engine.connect() as conn:
        cfg = Config()
        cfg.attributes["connection"] = conn
        cfg.attributes["history"] = history
        with EnvironmentContext(cfg, script, fn=step, destination_rev=to):
            run_migrations(history, conn)
        conn.commit()
    return done


def run_migrations(history: Migrations, conn: Connection) -> None:
    """What each history's ``env.py`` does: configure Alembic on ``conn`` and run, under a lock on PostgreSQL.

    A history's ``env.py`` is the same three lines for the core's and a plugin's::

        from alembic import context
        from conveyor.plugin_api import run_migrations
        run_migrations(context.config.attributes["history"], context.config.attributes["connection"])
    """
    from alembic import context

    context.configure(connection=conn, target_metadata=history.metadata, version_table=history.version_table,
                      transaction_per_migration=False, render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        if conn.dialect.name == "postgresql":
            # one upgrader per database at a time; the next finds the version table current
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": zlib.crc32(history.version_table.encode())})
        context.run_migrations()


def differences(bind: Engine | Connection, *, control: bool = False, plugins: Sequence[Migrations] = ()
                ) -> list[Any]:
    """What the database's tables and indexes lack or have beyond this release's ``schema`` (Alembic's compare)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    out: list[Any] = []
    with connection(bind) as conn:
        for h in histories(control, plugins):
            mc = MigrationContext.configure(conn, opts={"version_table": h.version_table,
                                                        "include_name": _ours(h.metadata)})
            out += compare_metadata(mc, h.metadata)
    return out


def _ours(md: MetaData) -> Any:
    def include(name: str | None, type_: str, parent: Any) -> bool:
        return type_ != "table" or name in md.tables
    return include


def describe(revisions: Iterable[Revision]) -> str:
    """One line naming the revisions (for the CLI)."""
    return ", ".join(str(r) for r in revisions)
