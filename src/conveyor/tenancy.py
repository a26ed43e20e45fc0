"""A database per tenant (or per tenant and org), served by one fleet.

``CONVEYOR_TENANCY`` picks the mode:

- ``single`` (default): one database (``CONVEYOR_DB_URL``) holds every tenant's rows, each
  tagged with ``tenant_id`` and ``org_id``.
- ``db-per-tenant``: each tenant's jobs live in a database of their own, whose URL is
  ``CONVEYOR_DB_URL_TEMPLATE`` with ``{tenant}`` filled in.
- ``db-per-tenant-org``: the same per (tenant, org), with ``{tenant}`` and ``{org}``.

In the two database-per-tenant modes ``CONVEYOR_DB_URL`` names the *control database*. It
holds the registry of tenant databases (``conveyor_tenants``), the fleet's processes
(``conveyor_workers``), the scheduler's leader lease and, with ``CONVEYOR_QUEUE_URL=sql``,
the queue table. A tenant database exists only once ``conveyor tenants add`` created,
migrated and registered it: nothing creates one on request.

Names are checked before they come near a URL: a tenant or org is 1 to 63 of ``a-z 0-9 _ -``
starting with a letter or digit, so it can never add a host, a path, a parameter or a
quote to the template. Registration also refuses two names that would fill the template
into the same URL (``a__b`` + ``c`` and ``a`` + ``b__c`` under ``x__{tenant}__{org}``).

A process keeps one ``Conveyor`` (one engine and pool) per tenant database it touches, at
most ``CONVEYOR_TENANT_CACHE_SIZE`` of them; the least recently used one is disposed when
another is needed. The queue, storage and plugins are the control ``Conveyor``'s, shared.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, delete, func, insert, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from conveyor.config import Settings, mask_url
from conveyor.errors import ConfigError, ConveyorError

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.tenancy")

SINGLE = "single"
DB_PER_TENANT = "db-per-tenant"
DB_PER_TENANT_ORG = "db-per-tenant-org"
MODES = (SINGLE, DB_PER_TENANT, DB_PER_TENANT_ORG)

#: what a tenant or org name may be in the database-per-tenant modes
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
_NAME = re.compile(NAME_PATTERN)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which would merge two databases
PG_NAME_MAX = 63
#: pool of one tenant database's engine (a process may hold CONVEYOR_TENANT_CACHE_SIZE of them)
TENANT_POOL = {"pool_size": 3, "max_overflow": 12}
#: how long a process trusts its copy of the registry before reading it again (a miss reads it at once)
REGISTRY_TTL_S = 5.0


class TenantError(ConveyorError):
    """A tenant (or org) this deployment does not serve."""


class InvalidTenant(TenantError):
    """A name that is not a tenant or org name (see ``NAME_PATTERN``), or one the template cannot take."""


class UnknownTenant(TenantError):
    """A well-formed tenant (and org) that has no registered database."""


@dataclass(frozen=True, order=True)
class TenantKey:
    """Which database: a tenant, and its org in ``db-per-tenant-org`` (None otherwise)."""

    tenant: str
    org: str | None = None

    def __str__(self) -> str:
        return self.tenant if self.org is None else f"{self.tenant}/{self.org}"


def check_name(what: str, value: object) -> str:
    """``value`` if it is a valid tenant or org name; InvalidTenant otherwise."""
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    shown = repr(value)[:80].encode("ascii", "backslashreplace").decode()
    raise InvalidTenant(f"{what} {shown} is not a valid name here: 1 to 63 of a-z 0-9 _ -, starting with a "
                        "letter or digit")


def _placeholders(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def check_settings(settings: Settings) -> None:
    """ConfigError unless ``tenancy`` and ``db_url_template`` fit together."""
    mode, template = settings.tenancy, settings.db_url_template
    where = settings.sources.get("tenancy", "default")
    if mode not in MODES:
        raise ConfigError(f"{where}: tenancy must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == SINGLE:
        return
    twhere = settings.sources.get("db_url_template", "CONVEYOR_DB_URL_TEMPLATE")
    if not template:
        raise ConfigError(f"tenancy {mode!r} needs CONVEYOR_DB_URL_TEMPLATE, e.g. "
                          "postgresql+psycopg://user@host/conveyor__{tenant}"
                          + ("__{org}" if mode == DB_PER_TENANT_ORG else ""))
    names = _placeholders(template)
    stray = template
    for n in names:
        stray = stray.replace("{" + n + "}", "")
    wanted = {"tenant", "org"} if mode == DB_PER_TENANT_ORG else {"tenant"}
    if "{" in stray or "}" in stray or set(names) - wanted:
        raise ConfigError(f"{twhere}: db_url_template may only contain the placeholders "
                          f"{', '.join('{' + w + '}' for w in sorted(wanted))} in mode {mode!r}; "
                          f"got {mask_url(template)!r}")
    missing = wanted - set(names)
    if missing:
        raise ConfigError(f"{twhere}: db_url_template must contain {', '.join('{' + m + '}' for m in sorted(missing))}"
                          f" in mode {mode!r}, so every database is its own; got {mask_url(template)!r}")
    try:
        make_url(template.replace("{tenant}", "t").replace("{org}", "o"))
    except ArgumentError:
        raise ConfigError(f"{twhere}: db_url_template {mask_url(template)!r} is not a database URL") from None


def _pg_driver(url: URL) -> URL:
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


def database_url(template: str, key: TenantKey) -> str:
    """The template with the key's names filled in (names checked again; PostgreSQL's name length enforced)."""
    check_name("tenant", key.tenant)
    if key.org is not None:
        check_name("org", key.org)
    url = template.replace("{tenant}", key.tenant).replace("{org}", key.org or "")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"CONVEYOR_DB_URL_TEMPLATE filled for {key} is not a database URL") from None
    if parsed.get_backend_name() == "postgresql" and len((parsed.database or "").encode()) > PG_NAME_MAX:
        raise InvalidTenant(f"the database of {key} would be named {parsed.database!r}, longer than PostgreSQL's "
                            f"{PG_NAME_MAX} bytes: choose a shorter name (or a shorter CONVEYOR_DB_URL_TEMPLATE)")
    return url


def create_database(url: str) -> bool:
    """Make sure the database ``url`` names exists; True if this call created it.

    PostgreSQL: ``CREATE DATABASE`` through the server's ``postgres`` (else ``template1``)
    database, with the URL's credentials. SQLite: the file's directory is created (the
    file appears on first connect). Other backends: the database must exist already.
    """
    parsed = _pg_driver(make_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            return False
        path = Path(db)
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        return not existed
    if backend != "postgresql":
        return False
    name = parsed.database or ""
    last: Exception | None = None
    for maintenance in ("postgres", "template1"):
        engine = create_engine(parsed.set(database=maintenance), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                    return False
                quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                try:
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) == "42P04":  # duplicate_database: a racing add
                        return False
                    raise
                return True
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in ("3D000", "28000"):  # no such maintenance db, no access
                last = exc
                continue
            raise
        finally:
            engine.dispose()
    raise ConfigError(f"cannot create the database {name!r}: neither the postgres nor the template1 database "
                      f"of that server is reachable with these credentials ({last})")


class Tenancy:
    """The tenant databases of one deployment: names, registry, and a bounded cache of their ``Conveyor``s."""

    def __init__(self, control: Conveyor) -> None:
        s = control.settings
        check_settings(s)  # settings built in code were never checked by load_settings
        self.control = control
        self.mode = s.tenancy
        self.per_org = self.mode == DB_PER_TENANT_ORG
        self.template = s.db_url_template
        self.cache_size = max(1, s.tenant_cache_size)
        self._apps: OrderedDict[TenantKey, Conveyor] = OrderedDict()
        self._lock = threading.Lock()
        self._known: frozenset[TenantKey] = frozenset()
        self._known_at = -math.inf
        self._registry_lock = threading.Lock()
        self.evicted = 0

    # ------------------------------------------------------------ names

    def key(self, tenant: str | None, org: str | None = None) -> TenantKey:
        """The database key for a tenant (and org); InvalidTenant for a bad or missing name."""
        check_name("tenant", tenant)
        assert tenant is not None
        if not self.per_org:
            return TenantKey(tenant)
        if not org:
            raise InvalidTenant(f"tenancy {self.mode!r} keeps each org in its own database: name the org "
                                f"of tenant {tenant!r}")
        return TenantKey(tenant, check_name("org", org))

    def key_of(self, fields: Mapping[str, Any]) -> TenantKey:
        """The key a queue entry's routing fields (``tenant_id``, ``org_id``) name."""
        return self.key(str(fields.get("tenant_id") or ""), str(fields.get("org_id") or "") or None)

    def url(self, key: TenantKey) -> str:
        """The database URL of a key (not checked against the registry)."""
        return database_url(self.template, key)

    # ------------------------------------------------------------ registry

    def _read_registry(self) -> frozenset[TenantKey]:
        from conveyor.schema import tenants
        with self.control.engine.connect() as conn:
            rows = conn.execute(select(tenants.c.tenant, tenants.c.org)).all()
        keys = set()
        for r in rows:
            if self.per_org != bool(r.org):
                continue  # registered under the other database-per-tenant mode
            keys.add(TenantKey(r.tenant, r.org or None))
        return frozenset(keys)

    def registered(self, *, refresh: bool = False) -> list[TenantKey]:
        """Every registered tenant database of this mode, sorted (read again after ``REGISTRY_TTL_S``)."""
        if refresh or time.monotonic() - self._known_at > REGISTRY_TTL_S:
            with self._registry_lock:
                self._known = self._read_registry()
                self._known_at = time.monotonic()
        return sorted(self._known)

    def is_registered(self, key: TenantKey) -> bool:
        """Whether ``key`` has a registered database (a miss reads the registry again before answering)."""
        if key in self._known and time.monotonic() - self._known_at <= REGISTRY_TTL_S:
            return True
        return key in self.registered(refresh=True)

    def add(self, tenant: str, org: str | None = None) -> dict[str, Any]:
        """Create (if missing), migrate and register a tenant's database; safe to run again."""
        from conveyor.db import init_db, make_engine, utcnow
        from conveyor.schema import tenants
        key = self.key(tenant, org)
        url = self.url(key)
        for other in self.registered(refresh=True):
            try:
                same = other != key and self.url(other) == url
            except TenantError:
                continue
            if same:
                raise InvalidTenant(f"{key} and the registered {other} would share the database {mask_url(url)}; "
                                    "choose another name")
        created_db = create_database(url)
        engine = make_engine(url)
        try:
            applied = init_db(engine, plugins=self.control.plugins.migrations())
        finally:
            engine.dispose()
        new = True
        with self.control.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(insert(tenants), [{"tenant": key.tenant, "org": key.org or "",
                                                    "created_at": utcnow()}])
            except IntegrityError:
                new = False
        self.registered(refresh=True)
        log.info("tenant %s: database %s%s, %d schema revision(s) applied, %s", key, mask_url(url),
                 " created" if created_db else "", len(applied), "registered" if new else "already registered")
        return {"tenant": key.tenant, "org": key.org, "database": mask_url(url), "database_created": created_db,
                "applied": applied, "registered": new}

    def remove(self, tenant: str, org: str | None = None, *, force: bool = False) -> dict[str, Any]:
        """Unregister a tenant's database, so the API and the fleet stop serving it; its data stays.

        Refused (TenantError) while the database holds queued or running jobs, or cannot be
        reached to tell, unless ``force``: such jobs would wait until the tenant is added again.
        The database itself is never dropped: that is the operator's decision, after a backup.
        """
        from conveyor.db import make_engine
        from conveyor.schema import jobs, tenants
        key = self.key(tenant, org)
        if key not in self.registered(refresh=True):
            raise UnknownTenant(f"{key} is not registered (`conveyor tenants list` shows what is)")
        url = self.url(key)
        active: int | None = None
        try:
            engine = make_engine(url)
            try:
                with engine.connect() as conn:
                    active = conn.execute(select(func.count()).select_from(jobs).where(
                        jobs.c.status.in_(("queued", "running")))).scalar_one()
            finally:
                engine.dispose()
        except Exception as exc:
            if not force:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise TenantError(f"cannot tell whether {key}'s database still has work ({first}); "
                                  "pass --force to remove it anyway") from None
        if active and not force:
            raise TenantError(f"{key}'s database holds {active} queued or running job(s), which would wait until "
                              "the tenant is added again; let them finish or cancel them, or pass --force")
        with self.control.engine.begin() as conn:
            conn.execute(delete(tenants).where(tenants.c.tenant == key.tenant, tenants.c.org == (key.org or "")))
        self.registered(refresh=True)
        self._forget(key)
        log.info("tenant %s: unregistered; database %s kept", key, mask_url(url))
        return {"tenant": key.tenant, "org": key.org, "database": mask_url(url), "active_jobs": active,
                "removed": True}

    def _forget(self, key: TenantKey) -> None:
        with self._lock:
            app = self._apps.pop(key, None)
        if app is not None:
            app.engine.dispose()

    def describe(self) -> list[dict[str, Any]]:
        """The registry as rows: tenant, org, database URL (password masked), created_at."""
        from conveyor.schema import tenants
        with self.control.engine.connect() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.tenant, tenants.c.org)).mappings().all()
        out = []
        for r in rows:
            if self.per_org != bool(r["org"]):
                continue
            key = TenantKey(r["tenant"], r["org"] or None)
            try:
                url = mask_url(self.url(key))
            except (TenantError, ConfigError) as exc:
                url = f"(unusable: {exc})"
            out.append({"tenant": key.tenant, "org": key.org, "database": url, "created_at": r["created_at"]})
        return out

    def init_all(self) -> list[dict[str, Any]]:
        """Upgrade every registered tenant database to this release's schema (``conveyor db upgrade``).

        A database that cannot be reached is reported with its error, and the others are still done.
        """
        from conveyor.db import init_db, make_engine
        out: list[dict[str, Any]] = []
        histories = self.control.plugins.migrations()
        for key in self.registered(refresh=True):
            try:
                engine = make_engine(self.url(key))
                try:
                    out.append({"tenant": key.tenant, "org": key.org, "applied": init_db(engine, plugins=histories),
                                "error": None})
                finally:
                    engine.dispose()
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                out.append({"tenant": key.tenant, "org": key.org, "applied": [],
                            "error": f"{type(exc).__name__}: {first}"})
        return out

    # ------------------------------------------------------------ apps

    def app_for(self, key: TenantKey, *, check: bool = True) -> Conveyor:
        """The ``Conveyor`` of a tenant database (cached); UnknownTenant if ``check`` and it is not registered.

        A cached database is checked against the registry too (as read within ``REGISTRY_TTL_S``),
        so a tenant removed by another process stops being served here within that time.
        """
        if check and not self.is_registered(key):
            self._forget(key)
            raise UnknownTenant(f"tenant {key.tenant!r}" + (f" org {key.org!r}" if key.org else "")
                                + " has no database here; an operator adds it with `conveyor tenants add`")
        with self._lock:
            app = self._apps.get(key)
            if app is not None:
                self._apps.move_to_end(key)
                return app
        app = self._make(key)
        evicted: list[Conveyor] = []
        with self._lock:
            existing = self._apps.get(key)
            if existing is not None:  # another thread made it meanwhile: ours never connected
                self._apps.move_to_end(key)
                return existing
            self._apps[key] = app
            while len(self._apps) > self.cache_size:
                evicted.append(self._apps.popitem(last=False)[1])
        for old in evicted:
            self.evicted += 1
            log.info("tenant database %s left the cache of %d; its engine is disposed", old.tenant_key,
                     self.cache_size)
            old.engine.dispose()
        return app

    def _make(self, key: TenantKey) -> Conveyor:
        from conveyor.app import Conveyor
        from conveyor.db import make_engine
        url = self.url(key)
        pool = {} if make_url(url).get_backend_name() == "sqlite" else dict(TENANT_POOL)
        c = self.control
        return Conveyor(c.settings.with_(db_url=url), engine=make_engine(url, **pool), queue=c.queue,
                        plugins=c.plugins, storage=c.storage, control=c, tenant_key=key)

    def apps(self) -> Iterator[tuple[TenantKey, Conveyor]]:
        """``(key, app)`` of every registered tenant database, in key order (the registry read as cached)."""
        for key in self.registered():
            yield key, self.app_for(key, check=False)

    def cached(self) -> list[TenantKey]:
        """The keys whose engines this process holds, least recently used first."""
        with self._lock:
            return list(self._apps)

    def close(self) -> None:
        """Dispose every cached tenant engine."""
        with self._lock:
            apps, self._apps = list(self._apps.values()), OrderedDict()
        for app in apps:
            app.engine.dispose()

