"""The slot pool: one thread per slot runs handlers; a slot whose handler is abandoned gets a fresh thread."""

from __future__ import annotations

import queue as stdqueue
import threading
from collections.abc import Callable

from conveyor.kinds import JobKind
from conveyor.worker.held import Held, HeldJobs


class SlotPool:
    """Threads that take ``(held, kind)`` work items and run ``execute`` on each."""

    def __init__(self, name: str, held: HeldJobs, execute: Callable[[Held, JobKind | None], None]) -> None:
        self.name = name
        self.held = held
        self.execute = execute
        self._work: stdqueue.SimpleQueue[tuple[Held, JobKind | None] | None] = stdqueue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._retired: set[threading.Thread] = set()

    def start(self, count: int) -> None:
        """Start ``count`` slot threads."""
        for _ in range(count):
            self.add_thread()

    def submit(self, held: Held, kind: JobKind | None) -> None:
        """Queue an attempt for the next free slot thread."""
        self._work.put((held, kind))

    def add_thread(self) -> None:
        """One more slot thread (at start, or in place of one whose handler was abandoned)."""
        t = threading.Thread(target=self._loop, name=f"{self.name}-slot", daemon=True)
        with self.held.mutex:
            self._threads.add(t)
        t.start()

    def retire(self, held: Held) -> bool:
        """Give up on the thread running ``held`` (the mutex held): it exits after its handler returns.

        Returns whether there was such a thread; the caller then adds a fresh one.
        """
        if held.thread is not None and held.thread in self._threads:
            self._retired.add(held.thread)
        return held.thread is not None

    def stop(self) -> None:
        """Ask every slot thread to exit once idle."""
        with self.held.mutex:
            count = len(self._threads)
        for _ in range(count):
            self._work.put(None)

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._work.get()
            if item is None:
                break
            held, kind = item
            held.thread = me
            if not held.outcome_sent:  # else given up on (released, abandoned) before it started
                self.execute(held, kind)
            with self.held.mutex:
                if me in self._retired:  # its handler was abandoned; a fresh thread took the slot
                    self._retired.discard(me)
                    break
        with self.held.mutex:
            self._threads.discard(me)
