"""The lease keeper: one thread renews held leases, refreshes queue entries, fires timeouts and cancellations."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor import presence
from conveyor.worker.held import Held, HeldJobs, by_app

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


class LeaseKeeper:
    """Every ``heartbeat_s``: renew each held lease (a lost one cancels its attempt) and say the worker lives.

    Between beats, every tick: an attempt past its kind's timeout is cancelled (``timeout``),
    one whose handler ignored its cancellation for ``stop_grace_s`` is abandoned, and every
    ``cancel_poll_s`` the database is asked which held jobs were cancelled.
    """

    def __init__(self, app: Conveyor, name: str, held: HeldJobs, done: threading.Event, *, tenancy: Any,
                 abandon: Callable[[Held], None]) -> None:
        s = app.settings
        self.app = app
        self.name = name
        self.held = held
        self._done = done
        self._tenancy = tenancy
        self._abandon = abandon
        self.lease_s = s.lease_seconds
        self.heartbeat_s = s.heartbeat_interval
        # cancellations are noticed between heartbeats too, with one cheap primary-key read
        self.cancel_poll_s = min(2.0, self.heartbeat_s)
        # how long a handler may ignore its cancellation token before its slot is reclaimed
        self.stop_grace_s = max(2.0, self.heartbeat_s)

    def loop(self) -> None:
        """Run until the worker is done."""
        engine = self.app.engine
        next_beat = time.monotonic() + self.heartbeat_s
        next_cancel_poll = time.monotonic() + self.cancel_poll_s
        tick = min(0.25, self.heartbeat_s / 4)
        while not self._done.wait(tick):
            now = time.monotonic()
            running = self.held.snapshot()
            for run in running:
                if run.deadline is not None and now >= run.deadline and not run.token.cancelled:
                    run.token.cancel("timeout")
                elif "stop_at" in run.extra and now - run.extra["stop_at"] > self.stop_grace_s:
                    self._abandon(run)
            groups = by_app(self.app, self._tenancy, running)
            if now >= next_cancel_poll and now < next_beat and running:
                next_cancel_poll = now + self.cancel_poll_s
                self._poll_cancellations(groups)
            if now < next_beat:
                continue
            next_beat = now + self.heartbeat_s
            try:
                renewed = self._renew(groups)
                self.app.queue.touch(self.name, [r.claimed.entry_id for r in renewed])
                presence.beat(engine, self.name, len(running), self.held.progressed)
                self.held.progressed = False
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _poll_cancellations(self, groups: list[tuple[Conveyor, list[Held]]]) -> None:
        for app, group in groups:
            try:
                for job_id in app.store.cancelled_among([r.claimed.job.id for r in group]):
                    r = self.held.get(job_id)
                    if r is not None:
                        r.token.cancel("cancelled")
            except Exception as exc:
                log.debug("cancel poll failed: %s", exc)

    def _renew(self, groups: list[tuple[Conveyor, list[Held]]]) -> list[Held]:
        """Renew each database's leases (a failing tenant database's are left to expire); the renewed attempts."""
        renewed: list[Held] = []
        for app, group in groups:
            try:
                lost = app.store.renew(self.name, {r.claimed.job.id: r.claimed.job.attempt_id for r in group},
                                       self.lease_s)
            except Exception as exc:
                if self._tenancy is None:
                    raise
                log.warning("heartbeat failed for tenant %s: %s", app.tenant_key, exc)
                continue
            renewed += group
            for job_id, why in lost.items():
                r = self.held.get(job_id)
                if r is not None:
                    r.token.cancel(why)
        return renewed
