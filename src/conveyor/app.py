"""`Conveyor`: one deployment's settings, database, queue, storage and plugins, wired together."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

from conveyor.config import Settings, load_settings
from conveyor.db import get_engine, init_db, utcnow
from conveyor.errors import ConfigError, QueuePressure, QuotaExceeded, WaitTimeout
from conveyor.jobstore import JobStore
from conveyor.kinds import JobKind
from conveyor.limits import check_specs
from conveyor.models import Job
from conveyor.notify import TENANT_OUTBOX_CHANNEL, notify_now
from conveyor.plugins import PluginHost, get_plugins
from conveyor.queue import Queue, open_queue
from conveyor.registry import Registry
from conveyor.storage import Storage
from conveyor.store import JobSpec, Submitted

if TYPE_CHECKING:
    from conveyor.tenancy import Tenancy, TenantKey

log = logging.getLogger("conveyor")


class Conveyor:
    """The library's entry point for a host application, a worker or the CLI.

    With ``CONVEYOR_TENANCY`` ``db-per-tenant`` or ``db-per-tenant-org`` the ``Conveyor``
    built from the settings is the *control* one: its database is the control database,
    and ``for_tenant(tenant, org)`` gives the ``Conveyor`` of a tenant's database (sharing
    the control one's queue, storage and plugins) to submit and read jobs with.
    """

    def __init__(self, settings: Settings | None = None, *, engine: Engine | None = None,
                 queue: Queue | None = None, plugins: PluginHost | None = None, storage: Storage | None = None,
                 control: Conveyor | None = None, tenant_key: TenantKey | None = None) -> None:
        self.settings = settings or load_settings()
        self._engine = engine
        self._queue = queue
        self._plugins = plugins
        self._observing = control is not None  # a tenant's Conveyor shares the control one's observers
        self._closed = False
        if storage is not None:
            self.__dict__["storage"] = storage
        self._control = control
        #: the tenant database this ``Conveyor`` serves (None: a single database, or the control one)
        self.tenant_key = tenant_key
        self._tenancy: Tenancy | None = None
        self._tenancy_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The job store's engine (one pool per process)."""
        if self._engine is None:
            self._engine = get_engine(self.settings.db_url)
        return self._engine

    @cached_property
    def store(self) -> JobStore:
        """This deployment's jobs: every read and write of them (a tenant's store wakes its control's dispatchers)."""
        s = self.settings
        return JobStore(self.engine, stream=s.stream_key, default_max_attempts=s.max_attempts,
                        idempotency_ttl_s=s.idempotency_ttl_seconds, max_payload_bytes=s.max_payload_bytes,
                        pending=self._control.store.pending if self._control is not None else None,
                        observers=self._control.store.observers if self._control is not None else None)

    @property
    def queue(self) -> Queue:
        """The queue backend ``queue_url`` names."""
        if self._queue is None:
            s = self.settings
            # a database per tenant: a sql queue is a table of the control database, apart from the jobs
            self._queue = open_queue(s.queue_url, self.engine, stream=s.stream_key, group=s.stream_group,
                                     maxlen=s.stream_maxlen, transactional=s.tenancy == "single")
        return self._queue

    @cached_property
    def storage(self) -> Storage:
        """The artifact and input storage ``storage_url`` names."""
        return Storage(self.settings.storage_url)

    @property
    def plugins(self) -> PluginHost:
        """Loaded plugins (entry points + ``CONVEYOR_PLUGINS``)."""
        if self._plugins is None:
            self._plugins = get_plugins(self.settings.plugins or None)
        if not self._observing and not self._closed:
            self._observing = True
            if self._plugins.pm.hook.conveyor_on_event.get_hookimpls():
                self.store.observers.subscribe(self._plugins.emit)
        return self._plugins

    @property
    def kinds(self) -> Registry[JobKind]:
        """Registered job kinds."""
        return self.plugins.registry("job_kinds")

    # ------------------------------------------------------------ tenancy

    @property
    def control(self) -> Conveyor:
        """The ``Conveyor`` of the control database: this one, unless this one serves a tenant's database.

        Processes register there (``conveyor_workers``) and the scheduler's leader lease lives there.
        """
        return self._control if self._control is not None else self

    @property
    def tenancy(self) -> Tenancy | None:
        """The tenant databases of a database-per-tenant deployment; None in ``single`` mode."""
        if self._control is not None:
            return self._control.tenancy
        if self.settings.tenancy == "single":
            return None
        with self._tenancy_lock:
            if self._tenancy is None:
                from conveyor.tenancy import Tenancy
                self._tenancy = Tenancy(self)
            return self._tenancy

    def for_tenant(self, tenant: str, org: str | None = None) -> Conveyor:
        """The ``Conveyor`` holding ``tenant``'s (and ``org``'s) jobs: this one in ``single`` mode.

        In the database-per-tenant modes, the registered tenant database's (cached);
        ``conveyor.tenancy.InvalidTenant`` for a name that is not one, ``UnknownTenant``
        for one without a registered database.
        """
        t = self.tenancy
        if t is None:
            return self
        if self.tenant_key is not None and self.tenant_key == t.key(tenant, org):
            return self
        return t.app_for(t.key(tenant, org))

    def announce(self, key: TenantKey | None) -> None:
        """Tell fleet dispatchers that ``key``'s database has new outbox rows (control database on PostgreSQL).

        Best effort: a dispatcher that misses it finds the rows at its next poll.
        """
        if key is None:
            return  # notify_now sends nothing on a database without notifications
        try:
            notify_now(self.engine, TENANT_OUTBOX_CHANNEL, str(key))
        except Exception as exc:
            log.debug("announcing new outbox rows of %s failed: %s", key, exc)

    def init_db(self) -> list[str]:
        """Create missing tables (idempotent); the control database's too in a database-per-tenant mode.

        Tenant databases are migrated by ``Tenancy.init_all`` (``conveyor db init``) and
        ``Tenancy.add`` (``conveyor tenants add``).
        """
        created = init_db(self.engine, control=self.settings.tenancy != "single" and self._control is None,
                          plugins=self.plugins.migrations())
        self.queue.ensure_group()
        return created

    def _max_attempts(self, kind: str, explicit: int | None) -> int:
        if explicit is not None:
            return explicit
        k = self.kinds.get(kind)
        if k is not None and k.retry.max_attempts:
            return k.retry.max_attempts
        return self.settings.max_attempts

    def _with_file_id(self, spec: JobSpec) -> JobSpec:
        """``spec`` with the ``file_id`` its kind's payload names, when it gives none (so every submit path,
        CLI, Python or HTTP, files the job under its input)."""
        if spec.file_id is not None or not isinstance(spec.payload, dict):
            return spec
        k = self.kinds.get(spec.kind)
        value = spec.payload.get(k.file_id_key) if k is not None and k.file_id_key else None
        return replace(spec, file_id=value) if isinstance(value, str) and value else spec

    def check_pressure(self) -> None:
        """Raise QueuePressure when the queue is past its configured thresholds."""
        s = self.settings
        if not (s.pressure_max_length or s.pressure_max_age_seconds):
            return
        try:
            p = self.queue.pressure()
        except Exception:  # the queue is down: the outbox takes the job, that is its purpose
            return
        if s.pressure_max_length and p.length >= s.pressure_max_length:
            raise QueuePressure(f"queue holds {p.length} entries (limit {s.pressure_max_length})",
                                retry_after_s=max(1.0, s.lease_seconds / 4))
        if s.pressure_max_age_seconds and (p.oldest_age_ms or 0) / 1000 >= s.pressure_max_age_seconds:
            raise QueuePressure(f"oldest entry is {p.oldest_age_ms} ms old (limit {s.pressure_max_age_seconds}s)",
                                retry_after_s=max(1.0, s.pressure_max_age_seconds / 2))

    def check_quota(self, specs: Sequence[JobSpec], *, conn: Connection | None = None) -> None:
        """Raise QuotaExceeded when a tenant would have more than ``tenant_max_active_jobs`` queued or running.

        A soft limit: submits racing each other may pass it by a few jobs. An
        idempotent resubmit of an existing job counts as a new one here.
        """
        limit = self.settings.tenant_max_active_jobs
        if not limit:
            return
        adding = Counter(s.tenant or "default" for s in specs)
        for tenant, n in adding.items():
            active = self.store.count_active(tenant, conn=conn)
            if active + n > limit:
                raise QuotaExceeded(f"tenant {tenant!r} has {active} active jobs (queued or running); the limit is "
                                    f"{limit} (CONVEYOR_TENANT_MAX_ACTIVE_JOBS)",
                                    retry_after_s=max(1.0, min(60.0, self.settings.lease_seconds / 4)),
                                    tenant=tenant, limit=limit)

    def submit(self, kind: str, payload: Any = None, *, conn: Connection | None = None, tenant: str = "default",
               org: str | None = None, priority: int = 0, idempotency_key: str | None = None,
               max_attempts: int | None = None, file_id: str | None = None, run_at: datetime | None = None,
               trace_id: str | None = None) -> str:
        """Submit one job; with ``conn`` it joins the caller's open transaction.

        Raises ``InvalidJob`` (code ``invalid_job``, ``invalid_payload`` or
        ``payload_too_large``) for a field out of bounds, and writes nothing then.
        """
        spec = JobSpec(kind, payload, tenant, org, priority, idempotency_key, max_attempts, file_id, run_at,
                             trace_id)
        return self.submit_many([spec], conn=conn)[0]

    def submit_job(self, kind: str, payload: Any = None, *, conn: Connection | None = None, tenant: str = "default",
                   org: str | None = None, priority: int = 0, idempotency_key: str | None = None,
                   max_attempts: int | None = None, file_id: str | None = None, run_at: datetime | None = None,
                   trace_id: str | None = None) -> Submitted:
        """``submit``, answering the new job as written (``job`` is None when ``idempotency_key`` named one)."""
        spec = JobSpec(kind, payload, tenant, org, priority, idempotency_key, max_attempts, file_id, run_at,
                             trace_id)
        return self._submit([spec], conn)[0]

    def submit_many(self, specs: Sequence[JobSpec], *, conn: Connection | None = None) -> list[str]:
        """Submit many jobs in one transaction; returns their ids in order (InvalidJob if any is refused)."""
        return [s.job_id for s in self._submit(specs, conn)]

    def _submit(self, specs: Sequence[JobSpec], conn: Connection | None) -> list[Submitted]:
        if self._control is None and self.settings.tenancy != "single":
            raise ConfigError(f"this Conveyor serves the control database of a {self.settings.tenancy} deployment, "
                              "which holds no jobs: submit through app.for_tenant(tenant, org)")
        checked = check_specs([self._with_file_id(s) for s in specs], self.settings.max_payload_bytes, utcnow())
        self.check_pressure()
        self.check_quota(checked, conn=conn)
        fixed = [s if s.max_attempts is not None else replace(s, max_attempts=self._max_attempts(s.kind, None))
                 for s in checked]
        done = self.store.submit(fixed, conn=conn, checked=True)
        if conn is None and self._control is not None:
            self._control.announce(self.tenant_key)
        return done

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        """One job by id."""
        return self.store.get_job(job_id, tenant)

    def list_jobs(self, **filters: Any) -> list[Job]:
        """Jobs, newest first."""
        return self.store.list_jobs(**filters)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """A job's change log."""
        return self.store.job_events(job_id)

    def cancel(self, job_id: str, tenant: str | None = None, reason: str = "") -> Job:
        """Cancel a queued or running job."""
        return self.store.cancel(job_id, tenant, reason)

    def retry(self, job_id: str, tenant: str | None = None) -> Job:
        """Run a failed or cancelled job again as a new attempt (``JobStore.retry``)."""
        job = self.store.retry(job_id, tenant)
        if self._control is not None:
            self._control.announce(self.tenant_key)
        return job

    def wait(self, job_id: str, timeout: float | None = 60.0, *, tenant: str | None = None,
             poll_s: float = 0.5) -> Job:
        """Block until the job is final and return it; WaitTimeout after ``timeout`` seconds (None: forever).

        Polls the job row, quickly at first, then every ``poll_s`` seconds.
        Raises JobNotFound if there is no such job (in ``tenant``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            job = self.get(job_id, tenant)
            if job.status.final:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(job_id, job.status.value, timeout or 0.0)
                time.sleep(min(delay, left))
            else:
                time.sleep(delay)
            delay = min(poll_s, delay * 2)

    def close(self) -> None:
        """Release queue connections and stop observing events (and the tenant databases' engines)."""
        self._closed = True
        if self._control is not None:
            return  # the queue, plugins and engine belong to the control Conveyor and its Tenancy
        if self._tenancy is not None:
            self._tenancy.close()
        if self._plugins is not None and "store" in self.__dict__:
            self.store.observers.unsubscribe(self._plugins.emit)
        if self._queue is not None:
            self._queue.close()
