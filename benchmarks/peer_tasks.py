"""The same no-op job for every peer; each run appends "id submit_ts done_ts" to the list ``bench:done``.

Imported by the peer worker processes that benchmarks/peers.py starts (BENCH_REDIS_URL names the broker).
"""

from __future__ import annotations

import os
import time

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DONE = "bench:done"
_r = redis.Redis.from_url(URL)


def _done(jid: str, ts: float) -> None:
    _r.rpush(DONE, f"{jid} {ts} {time.time()}")


# ---------------------------------------------------------------- Celery
def _celery():  # type: ignore[no-untyped-def]
    from celery import Celery

    app = Celery("bench", broker=URL)
    app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

    @app.task(name="noop")
    def noop(jid: str, ts: float) -> None:
        _done(jid, ts)

    return app, noop


# ---------------------------------------------------------------- Dramatiq
def _dramatiq():  # type: ignore[no-untyped-def]
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url=URL))

    @dramatiq.actor(max_retries=0)
    def dnoop(jid: str, ts: float) -> None:
        _done(jid, ts)

    return dnoop


# ---------------------------------------------------------------- RQ
def rq_noop(jid: str, ts: float) -> None:
    """The RQ job."""
    _done(jid, ts)


# ---------------------------------------------------------------- arq
async def arq_noop(ctx: dict, jid: str, ts: float) -> None:  # type: ignore[type-arg]
    """The arq job."""
    await ctx["redis"].rpush(DONE, f"{jid} {ts} {time.time()}")


class ArqSettings:
    """arq worker settings: 4 jobs at once."""

    functions = [arq_noop]
    max_jobs = 4
    keep_result = 0

    @staticmethod
    def _redis():  # type: ignore[no-untyped-def]
        from arq.connections import RedisSettings
        return RedisSettings.from_dsn(URL)


which = os.environ.get("BENCH_PEER", "")
if which == "celery":
    celery_app, noop = _celery()
elif which == "dramatiq":
    dnoop = _dramatiq()
elif which == "arq":
    ArqSettings.redis_settings = ArqSettings._redis()  # type: ignore[attr-defined]
