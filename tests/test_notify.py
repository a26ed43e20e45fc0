"""LISTEN/NOTIFY wake-ups on PostgreSQL; a plain bounded wait elsewhere."""

from __future__ import annotations

import threading
import time

from conveyor.notify import OUTBOX_CHANNEL, Listener, notify


def test_a_commit_wakes_a_listener_and_a_rollback_does_not(engine):
    listener = Listener(engine, OUTBOX_CHANNEL)
    try:
        if not listener.usable:
            t0 = time.monotonic()
            assert listener.wait(0.05) is False and time.monotonic() - t0 >= 0.04
            return
        assert listener.wait(0.01) is False  # connects and listens

        def send(commit: bool) -> None:
            time.sleep(0.2)
            with engine.connect() as conn:
                tx = conn.begin()
                notify(conn, OUTBOX_CHANNEL)
                tx.commit() if commit else tx.rollback()

        t = threading.Thread(target=send, args=(False,))
        t.start()
        assert listener.wait(1.0) is False  # rolled back: nothing delivered
        t.join()
        t = threading.Thread(target=send, args=(True,))
        t.start()
        t0 = time.monotonic()
        assert listener.wait(10.0) is True
        assert time.monotonic() - t0 < 5
        t.join()
    finally:
        listener.close()
