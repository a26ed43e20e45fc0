"""Queue outage: submits succeed, rows wait in the outbox, and everything is delivered once later.

The outage is simulated by a queue wrapper that raises ConnectionError (a stub
in the dramatiq sense: the embedded SQL queue has no server to stop). The real
broker outage, with a Redis server stopped and restarted, is in tests/redis/.
"""

from __future__ import annotations

import threading

from sqlalchemy import select

from conveyor.outbox import Dispatcher
from conveyor.queue.base import Queue
from conveyor.schema import outbox
from conveyor.store import JobSpec


class SwitchableQueue(Queue):
    """Delegates to a real queue, or raises ConnectionError while `down` is set."""

    def __init__(self, inner: Queue) -> None:
        self.inner = inner
        self.url = inner.url
        self.down = threading.Event()

    def _check(self):
        if self.down.is_set():
            raise ConnectionError("queue unreachable (simulated outage)")

    def ensure_group(self):
        self._check()
        return self.inner.ensure_group()

    def publish(self, messages, maxlen=None, conn=None):
        self._check()
        return self.inner.publish(messages, maxlen, conn=conn)

    def read(self, consumer, count, block_ms=0):
        self._check()
        return self.inner.read(consumer, count, block_ms)

    def ack(self, entry_ids):
        self._check()
        return self.inner.ack(entry_ids)

    def reclaim(self, consumer, min_idle_ms, cursor="0-0", count=100):
        self._check()
        return self.inner.reclaim(consumer, min_idle_ms, cursor, count)

    def touch(self, consumer, entry_ids):
        self._check()
        return self.inner.touch(consumer, entry_ids)

    def held(self, entry_ids):
        self._check()
        return self.inner.held(entry_ids)

    def pressure(self):
        self._check()
        return self.inner.pressure()

    def trim(self, maxlen):
        self._check()
        return self.inner.trim(maxlen)

    def wake(self):
        wake = getattr(self.inner, "wake", None)
        if wake:
            wake()


def test_outbox_keeps_rows_through_an_outage_and_delivers_each_once(app, pipeline):
    q = SwitchableQueue(app.queue)
    app._queue = q
    q.down.set()
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(60)])
    d = Dispatcher(app.store, q, batch=20, backoff_cap_s=0.5)
    for _ in range(3):
        r = d.run_once()
        assert r.published == 0
    with app.engine.connect() as c:
        rows = c.execute(select(outbox)).mappings().all()
    assert len(rows) == 60 and all(r["status"] == "pending" for r in rows)
    failed = [r for r in rows if r["attempts"] > 0]
    assert failed and all("queue unreachable" in r["last_error"] and r["next_attempt_at"] > r["created_at"]
                          for r in failed)
    with pipeline() as p:
        # workers also back off while the queue is down, then resume by themselves
        import time
        time.sleep(1.0)
        assert p.worker.stats.queue_errors > 0
        q.down.clear()
        done = p.wait(ids, timeout=60)
    assert all(j.status.value == "succeeded" and j.attempt_id == 1 for j in done)
    for job_id in ids:
        claims = [e for e in app.events(job_id) if e["action"] == "claimed"]
        assert len(claims) == 1
    with app.engine.connect() as c:
        assert all(r.status == "dispatched" for r in c.execute(select(outbox.c.status)))
