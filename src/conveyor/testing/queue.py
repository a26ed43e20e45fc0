"""The contract every queue backend passes: subclass ``QueueContract`` and provide a ``queue`` fixture.

Example::

    class TestMyQueue(QueueContract):
        @pytest.fixture
        def queue(self):
            q = MyQueue(...)   # empty, group created
            yield q
            q.close()
"""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.queue import START_CURSOR, Message, Queue


def _msgs(n: int, priority: int = 0, prefix: str = "job") -> list[Message]:
    return [Message(f"{prefix}-{i}", priority, {"job_id": f"{prefix}-{i}", "priority": str(priority)})
            for i in range(n)]


class QueueContract:
    """Behaviour the worker, dispatcher and scheduler rely on."""

    #: seconds a backend needs before an entry counts as idle (Redis idle is in ms)
    idle_unit_s: float = 0.05

    @pytest.fixture
    def queue(self) -> Queue:  # pragma: no cover - subclasses provide it
        raise NotImplementedError

    def test_publish_then_read_in_order(self, queue: Queue) -> None:
        ids = queue.publish(_msgs(3))
        assert len(ids) == 3 and len(set(ids)) == 3
        got = queue.read("c1", 10)
        assert [e.job_id for e in got] == ["job-0", "job-1", "job-2"]
        assert [e.entry_id for e in got] == ids
        assert got[0].fields["job_id"] == "job-0"

    def test_read_never_gives_more_than_count_and_no_entry_twice(self, queue: Queue) -> None:
        queue.publish(_msgs(5))
        a = queue.read("c1", 2)
        b = queue.read("c2", 10)
        assert len(a) == 2 and len(b) == 3
        assert not {e.entry_id for e in a} & {e.entry_id for e in b}
        assert queue.read("c3", 10) == []

    def test_ack_removes_from_pending(self, queue: Queue) -> None:
        queue.publish(_msgs(2))
        got = queue.read("c1", 2)
        assert queue.pressure().pending == 2
        assert queue.ack([got[0].entry_id]) == 1
        assert queue.pressure().pending == 1
        assert queue.held([e.entry_id for e in got]) == {got[1].entry_id}

    def test_entry_ids_are_never_reused(self, queue: Queue) -> None:
        first = queue.publish(_msgs(3))
        queue.ack([e.entry_id for e in queue.read("c1", 3)])
        queue.trim(0)
        again = queue.publish(_msgs(3))
        assert not set(first) & set(again)

    def test_held_covers_undelivered_and_pending(self, queue: Queue) -> None:
        ids = queue.publish(_msgs(2))
        assert queue.held(ids) == set(ids)
        got = queue.read("c1", 1)
        assert queue.held(ids) == set(ids)
        queue.ack([got[0].entry_id])
        assert queue.held(ids) == {ids[1]}

    def test_reclaim_takes_only_idle_entries(self, queue: Queue) -> None:
        queue.publish(_msgs(2))
        got = queue.read("dead", 2)
        assert queue.reclaim("c2", min_idle_ms=60_000).entries == []
        time.sleep(self.idle_unit_s * 3)
        r = queue.reclaim("c2", min_idle_ms=int(self.idle_unit_s * 1000))
        assert sorted(e.entry_id for e in r.entries) == sorted(e.entry_id for e in got)
        assert all(e.deliveries >= 2 for e in r.entries)

    def test_reclaim_cursor_advances_across_rounds(self, queue: Queue) -> None:
        queue.publish(_msgs(5))
        queue.read("dead", 5)
        time.sleep(self.idle_unit_s * 3)
        seen: list[str] = []
        cursor = START_CURSOR
        for _ in range(10):
            r = queue.reclaim("c2", int(self.idle_unit_s * 1000), cursor, count=2)
            seen += [e.entry_id for e in r.entries]
            cursor = r.cursor
            if cursor == START_CURSOR:
                break
        assert len(seen) == 5 and len(set(seen)) == 5
        assert cursor == START_CURSOR

    def test_touch_keeps_entries_from_being_reclaimed(self, queue: Queue) -> None:
        queue.publish(_msgs(1))
        got = queue.read("alive", 1)
        time.sleep(self.idle_unit_s * 4)
        queue.touch("alive", [got[0].entry_id])
        r = queue.reclaim("thief", int(self.idle_unit_s * 3000))
        assert r.entries == []

    def test_priority_first_without_starving_low(self, queue: Queue) -> None:
        queue.publish(_msgs(20, priority=0, prefix="low"))
        queue.publish(_msgs(3, priority=10, prefix="high"))
        first = queue.read("c1", 3)
        assert {e.job_id.split("-")[0] for e in first} == {"high"}
        queue.publish(_msgs(40, priority=10, prefix="more"))
        taken = []
        for _ in range(30):
            taken += [e.job_id for e in queue.read("c1", 2)]
        assert any(j.startswith("low") for j in taken), "low-priority entries starved"

    def test_pressure_reports_ages_and_sources(self, queue: Queue) -> None:
        p = queue.pressure()
        assert (p.length, p.pending, p.oldest_age_ms, p.oldest_age_source) == (0, 0, None, None)
        queue.publish(_msgs(3))
        time.sleep(0.02)
        p = queue.pressure()
        assert p.length == 3 and p.pending == 0 and p.oldest_age_source == "undelivered"
        assert p.oldest_age_ms is not None and p.oldest_age_ms >= 10
        queue.read("c1", 1)
        p = queue.pressure()
        assert p.pending == 1 and p.oldest_age_source == "pending"
        assert p.lag is None or p.lag == 2

    def test_trim_drops_oldest(self, queue: Queue) -> None:
        ids = queue.publish(_msgs(10))
        removed = queue.trim(4)
        assert removed >= 1
        left = queue.held(ids)
        assert ids[-1] in left and ids[0] not in left

    def test_blocking_read_wakes_on_publish(self, queue: Queue) -> None:
        got: list[object] = []
        t = threading.Thread(target=lambda: got.extend(queue.read("c1", 1, block_ms=5000)))
        t.start()
        time.sleep(0.1)
        queue.publish(_msgs(1))
        t.join(6)
        assert len(got) == 1

    def test_what_the_worker_calls_is_declared(self, queue: Queue) -> None:
        """A transactional queue takes inside a transaction and is polled with ``wait``; others refuse ``take``."""
        queue.wake()  # always safe: the dispatcher calls it after every publish
        t0 = time.monotonic()
        queue.wait(0.01)
        assert time.monotonic() - t0 < 2 and queue.poll_max_s > 0
        if not queue.transactional:
            with pytest.raises(NotImplementedError):
                queue.take(None, "c1", 1)  # type: ignore[arg-type]
            return
        engine = queue.engine  # type: ignore[attr-defined]  # a transactional queue lives in a database
        ids = queue.publish(_msgs(2))
        with engine.begin() as conn:
            taken = queue.take(conn, "c1", 5)
        assert [e.entry_id for e in taken] == ids
        assert queue.read("c2", 5) == []  # taken means delivered
