"""The jobs a worker holds (claimed, running or awaiting their commit) and the lock all its parts share."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.kinds import CancelToken

if TYPE_CHECKING:
    from conveyor import store
    from conveyor.app import Conveyor


@dataclass
class WorkerStats:
    """Counters of one worker's life."""

    read: int = 0
    claimed: int = 0
    reclaimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    stale: int = 0
    skipped: int = 0
    released: int = 0
    queue_errors: int = 0
    abandoned: int = 0


@dataclass
class Held:
    """One claimed attempt, from its claim until its outcome is committed (or it is released)."""

    claimed: store.Claimed
    token: CancelToken
    deadline: float | None
    app: Conveyor  # whose database holds the job
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    #: the attempt has ended for this worker: its outcome is queued for commit, or it was given up on
    outcome_sent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class HeldJobs:
    """The held attempts by job id, the one mutex every part of the worker shares, and its three conditions.

    One mutex, three conditions: each thread is woken only by what it waits for, because
    every needless wake-up of a thread costs the others the GIL on a job's hot path.
    """

    def __init__(self, slots: int, max_held: int) -> None:
        self.slots = slots
        #: held jobs (running or awaiting their commit) are capped, so a slow database cannot make
        #: the worker take ever more work
        self.max_held = max_held
        self.mutex = threading.RLock()
        self.changed = threading.Condition(self.mutex)  # held jobs changed (shutdown waits on it)
        self.reader_wake = threading.Condition(self.mutex)  # slots freed, or stop
        self.finalizer_wake = threading.Condition(self.mutex)  # outcomes or acks to send, or stop
        self.running: dict[str, Held] = {}
        #: work was read or committed since the last heartbeat (``conveyor_workers.last_progress_at``)
        self.progressed = True
        # the reader sleeps until this many slots are free (0: it is not waiting)
        self._reader_wants = 0

    def __len__(self) -> int:
        with self.mutex:
            return len(self.running)

    def free(self) -> int:
        """Slots whose handler is not running; a finished attempt waiting for its commit holds no slot."""
        with self.mutex:
            return self.free_locked()

    def free_locked(self) -> int:
        """``free()`` with the mutex held."""
        busy = sum(1 for r in self.running.values() if not r.outcome_sent)
        return max(0, min(self.slots - busy, self.max_held - len(self.running)))

    def any_running_locked(self) -> bool:
        """Whether some handler is still running (the mutex held)."""
        return any(not r.outcome_sent for r in self.running.values())

    def wait_for_slots(self, wanted: int, timeout: float) -> None:
        """Sleep (the mutex held) until ``wanted`` slots are free, or ``timeout``."""
        self._reader_wants = wanted
        try:
            self.reader_wake.wait(timeout)
        finally:
            self._reader_wants = 0

    def slot_freed(self) -> int:
        """Wake the reader if it now has the free slots it waits for (the mutex held); returns them."""
        free = self.free_locked()
        if self._reader_wants and free >= self._reader_wants:
            self.reader_wake.notify()
        return free

    def wake_all(self) -> None:
        """Wake every waiting part (stop)."""
        with self.mutex:
            self.changed.notify_all()
            self.reader_wake.notify_all()
            self.finalizer_wake.notify_all()

    def snapshot(self) -> list[Held]:
        """The held attempts now."""
        with self.mutex:
            return list(self.running.values())

    def get(self, job_id: str) -> Held | None:
        """The held attempt of a job, or None."""
        return self.running.get(job_id)

    def add(self, held: Held) -> None:
        """Hold a claimed attempt."""
        with self.mutex:
            self.running[held.claimed.job.id] = held


def by_app(default: Conveyor, tenancy: Any, running: list[Held]) -> list[tuple[Conveyor, list[Held]]]:
    """Held jobs grouped by the database that holds them (one group with one database)."""
    if tenancy is None:
        return [(default, running)] if running else []
    groups: dict[int, tuple[Conveyor, list[Held]]] = {}
    for r in running:
        groups.setdefault(id(r.app), (r.app, []))[1].append(r)
    return list(groups.values())
