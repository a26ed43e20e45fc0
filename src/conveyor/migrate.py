"""Schema migrations (Alembic): bring a job database, or a control database, to this release's schema.

Two histories, each with its own version table so that neither meets a host
application's own ``alembic_version``:

- ``jobs`` (``conveyor_schema_version``): the job store's tables, in every job database;
- ``control`` (``conveyor_control_schema_version``): the tenant registry, only in the
  control database of a database-per-tenant deployment (which has the job tables too).

The first revision of each history creates only the tables a database lacks, so a
database made before migrations existed (by ``create_all``) is brought up to date by
the same ``upgrade``. On PostgreSQL all pending revisions run in one transaction under
an advisory lock: two processes upgrading at once run them once, and a failure leaves
the database as it was.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, inspect, text

from conveyor.errors import SchemaTooNew
from conveyor.schema import control_metadata, metadata

#: history name → version table
VERSION_TABLES = {"jobs": "conveyor_schema_version", "control": "conveyor_control_schema_version"}
_METADATA = {"jobs": metadata, "control": control_metadata}
#: each history's newest revision, without importing Alembic (a test checks it against the scripts)
HEADS = {"jobs": "0002", "control": "c0001"}
_SCRIPTS: dict[str, Any] = {}
_SCRIPTS_LOCK = threading.Lock()
#: Alembic's ``context`` is one module-level proxy: one upgrade at a time per process
_UPGRADE_LOCK = threading.Lock()


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


def histories(control: bool) -> tuple[str, ...]:
    """The histories a database has: the job store's, and with ``control`` the control database's."""
    return ("jobs", "control") if control else ("jobs",)


def _script(history: str) -> Any:
    """The history's Alembic script directory, loaded once per process."""
    with _SCRIPTS_LOCK:
        script = _SCRIPTS.get(history)
        if script is None:
            from alembic.script import ScriptDirectory
            script = ScriptDirectory(str(files("conveyor.migrations") / history),
                                     version_locations=[str(files("conveyor.migrations") / history / "versions")])
            _SCRIPTS[history] = script
        return script


def head(history: str) -> str:
    """The newest revision of a history."""
    rev = _script(history).get_current_head()
    assert rev is not None
    return str(rev)


def current(bind: Engine | Connection, history: str = "jobs") -> str | None:
    """The revision a database's history is at; None before its first upgrade."""
    with _connect(bind) as conn:
        if not inspect(conn).has_table(VERSION_TABLES[history]):
            return None
        row = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLES[history]}")).first()
        return str(row[0]) if row else None


def behind(bind: Engine | Connection, *, control: bool = False) -> list[tuple[str, str | None, str]]:
    """``(history, current, head)`` of each history not at this release's head; cheap (no Alembic)."""
    out = []
    for h in histories(control):
        cur = current(bind, h)
        if cur != HEADS[h]:
            out.append((h, cur, HEADS[h]))
    return out


def state(bind: Engine | Connection, *, control: bool = False) -> list[SchemaState]:
    """Each history's current revision, head and pending revisions (reads only)."""
    out = []
    for h in histories(control):
        cur = current(bind, h)
        out.append(SchemaState(h, cur, head(h), tuple(_pending(h, cur))))
    return out


def _pending(history: str, cur: str | None) -> Iterator[Revision]:
    script = _script(history)
    _known(history, cur)
    revs = list(script.iterate_revisions("head", cur or "base"))
    for r in reversed(revs):
        yield Revision(history, str(r.revision), _title(r))


def _known(history: str, cur: str | None) -> None:
    """SchemaTooNew when the database is at a revision this release does not have."""
    from alembic.util import CommandError

    if cur is None:
        return
    try:
        _script(history).get_revision(cur)
    except CommandError:
        raise SchemaTooNew(f"the database's {history} schema is at revision {cur!r}, which this release "
                           f"(head {head(history)!r}) does not have: a newer Conveyor upgraded it; run that "
                           "release, or restore a backup taken before the upgrade") from None


def _title(rev: Any) -> str:
    return (rev.doc or "").strip().splitlines()[0] if rev.doc else str(rev.revision)


def upgrade(engine: Engine, *, control: bool = False, to: str = "head") -> list[Revision]:
    """Apply every pending revision (safe to run again, and from many processes at once); returns those applied."""
    applied: list[Revision] = []
    for h in histories(control):
        applied += _upgrade(engine, h, to if h == "jobs" or to == "head" else "head")
    return applied


def _upgrade(engine: Engine, history: str, to: str) -> list[Revision]:
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    script = _script(history)
    done: list[Revision] = []

    def step(rev: Any, context: Any) -> Any:
        for r in rev or ():
            _known(history, str(r))
        # what alembic.command.upgrade does, on a script directory loaded once per process
        steps = script._upgrade_revs(to, rev)
        done.extend(Revision(history, str(s.revision.revision), _title(s.revision)) for s in steps)
        return steps

    with _UPGRADE_LOCK, engine.connect() as conn:
        cfg = Config()
        cfg.attributes["connection"] = conn
        with EnvironmentContext(cfg, script, fn=step, destination_rev=to):
            run_migrations(history, conn)
        conn.commit()
    return done


def run_migrations(history: str, conn: Connection) -> None:
    """What each history's ``env.py`` does: configure Alembic on ``conn`` and run, under a lock on PostgreSQL."""
    from alembic import context

    context.configure(connection=conn, target_metadata=_METADATA[history], version_table=VERSION_TABLES[history],
                      transaction_per_migration=False, render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        if conn.dialect.name == "postgresql":
            # one upgrader per database at a time; the next finds the version table current
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": zlib.crc32(VERSION_TABLES[history].encode())})
        context.run_migrations()


def differences(bind: Engine | Connection, *, control: bool = False) -> list[Any]:
    """What the database's tables and indexes lack or have beyond this release's ``schema`` (Alembic's compare)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    out: list[Any] = []
    with _connect(bind) as conn:
        for h in histories(control):
            mc = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLES[h],
                                                        "include_name": _ours(_METADATA[h])})
            out += compare_metadata(mc, _METADATA[h])
    return out


def _ours(md: MetaData) -> Any:
    def include(name: str | None, type_: str, parent: Any) -> bool:
        return type_ != "table" or name in md.tables
    return include


@contextmanager
def _connect(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


def describe(revisions: Iterable[Revision]) -> str:
    """One line naming the revisions (for the CLI)."""
    return ", ".join(str(r) for r in revisions)
