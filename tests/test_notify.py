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



def test_a_submit_wakes_waiting_dispatchers(app):
    """PostgreSQL: its NOTIFY reaches a listener (any process); SQLite: waits in this process wake."""
    listener = Listener(app.engine, OUTBOX_CHANNEL)
    try:
        if listener.usable:
            assert listener.wait(0.01) is False
            t = threading.Thread(target=lambda: (time.sleep(0.2), app.submit("conveyor.echo", {"n": 1})))
            t.start()
            assert listener.wait(10.0) is True
            t.join()
            return
        waiting = threading.Event()
        woke: list[bool] = []

        def waiter() -> None:
            with app.store.pending._cond:  # the deployment's dispatchers wait here
                waiting.set()
                woke.append(app.store.pending._cond.wait(10.0))

        t = threading.Thread(target=waiter)
        t.start()
        waiting.wait(5)
        app.submit("conveyor.echo", {"n": 1})  # wake() needs the lock: the waiter is already waiting
        t.join()
        assert woke == [True]
    finally:
        listener.close()
