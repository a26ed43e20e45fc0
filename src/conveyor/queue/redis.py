"""The Redis Streams queue (``CONVEYOR_QUEUE_URL=redis://host:port/db``).

Layout: one stream per priority band, all sharing one consumer group::

    {stream}:hi   priority > 0
    {stream}      priority == 0
    {stream}:lo   priority < 0

An entry carries only routing fields (``job_id``, ``enqueue_ts``, ``attempt_hint``,
``priority``, ``tenant_id``, ``org_id``, ``trace_id``); the payload stays in the
database. Entry ids handed to the core are the Redis ids, prefixed with the band
(``hi:1700000000000-0``, ``lo:…``) outside the normal band, so ids from different
streams never collide. An acknowledged entry is also deleted, so ``XLEN`` counts
only work that is waiting or running.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.retry import Retry
from sqlalchemy import Connection

from conveyor.config import mask_url
from conveyor.errors import ConfigError, QueueUnavailable
from conveyor.queue.base import START_CURSOR, Entry, Message, Pressure, Queue, Reclaimed

log = logging.getLogger("conveyor.queue.redis")

#: band suffixes, read in this order (highest priority first)
BANDS: tuple[str, ...] = ("hi", "", "lo")
#: every Nth read serves the bands lowest first, so no band starves
FAIR_EVERY = 5
#: longest single XREAD BLOCK; must stay below the socket timeout
_BLOCK_CHUNK_MS = 2000
_RID = re.compile(r"^\d+-\d+$")

# Deliver up to ARGV[3] new entries, taking the streams in KEYS order. When nothing
# is waiting, return the newest id of each stream so the caller can block on
# "anything newer" without missing an entry added in between.
_READ = """
local out = {}
local left = tonumber(ARGV[3])
for i = 1, #KEYS do
  if left <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', KEYS[i], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = {i, e[1], e[2]}
      left = left - 1
    end
  end
end
if #out > 0 then return {1, out} end
local tops = {}
for i = 1, #KEYS do
  local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  if last[1] then tops[i] = last[1][1] else tops[i] = '0-0' end
end
return {0, tops}
"""

# XACK, then XDEL what was really pending (never an undelivered entry).
_ACK = """
local n = 0
for i = 1, #KEYS do
  if redis.call('XACK', KEYS[i], ARGV[1], ARGV[i + 1]) == 1 then
    redis.call('XDEL', KEYS[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
"""

# Reset the idle time of entries this consumer still owns (never steal a peer's).
_TOUCH = """
local n = 0
for i = 1, #KEYS do
  local p = redis.call('XPENDING', KEYS[i], ARGV[1], ARGV[i + 2], ARGV[i + 2], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[i], ARGV[1], ARGV[2], 0, ARGV[i + 2], 'JUSTID')
    n = n + 1
  end
end
return n
"""


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(fn: Callable[Concatenate[RedisQueue, P], R]) -> Callable[Concatenate[RedisQueue, P], R]:
    """Turn a lost connection into QueueUnavailable, whose message names the URL and the fix."""
    @functools.wraps(fn)
    def wrapper(self: RedisQueue, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except AuthenticationError as exc:
            raise ConfigError(f"Redis at {mask_url(self.url)} refused the credentials ({exc}); "
                              "fix the user/password in CONVEYOR_QUEUE_URL") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unreachable(exc) from exc
    return wrapper


def band_of(priority: int) -> str:
    """The band suffix a priority maps to."""
    return "hi" if priority > 0 else ("lo" if priority < 0 else "")


def _ms(rid: str) -> int:
    return int(rid.split("-", 1)[0])


def _rid_key(rid: str) -> tuple[int, int]:
    a, _, b = rid.partition("-")
    return int(a), int(b or 0)


class RedisQueue(Queue):
    """Redis Streams consumer group behind the queue contract."""

    def __init__(self, url: str, *, stream: str = "conveyor:jobs", group: str = "conveyor:workers",
                 maxlen: int | None = 200_000, socket_timeout_s: float = 10.0,
                 connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.maxlen = maxlen
        self._reads = 0
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s, health_check_interval=30,
                # a short in-client retry rides over a blip; callers own the long backoff
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
        except ValueError as exc:
            raise ConfigError(f"CONVEYOR_QUEUE_URL {mask_url(url)!r} is not a valid Redis URL ({exc}); "
                              "use redis://[:password@]host:port/db or rediss://…") from None
        self._read_script = self.client.register_script(_READ)
        self._ack_script = self.client.register_script(_ACK)
        self._touch_script = self.client.register_script(_TOUCH)

    # ------------------------------------------------------------ naming

    def key(self, band: str) -> str:
        """Redis key of a band's stream."""
        return f"{self.stream}:{band}" if band else self.stream

    @property
    def keys(self) -> list[str]:
        """Every stream key this queue uses (highest band first)."""
        return [self.key(b) for b in BANDS]

    @staticmethod
    def _external(band: str, rid: str) -> str:
        return f"{band}:{rid}" if band else rid

    def _split(self, entry_id: str) -> tuple[str, str] | None:
        band, _, rid = entry_id.rpartition(":")
        if band not in BANDS or not _RID.match(rid):
            return None
        return band, rid

    def _by_band(self, entry_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for e in entry_ids:
            parts = self._split(e) if e else None
            if parts is not None:
                out.setdefault(parts[0], []).append(parts[1])
        return out

    # ------------------------------------------------------------ setup

    def _unreachable(self, exc: Exception) -> QueueUnavailable:
        return QueueUnavailable(f"cannot reach Redis at {mask_url(self.url)} ({exc}); start Redis there, "
                                "or point CONVEYOR_QUEUE_URL at a running server")

    @_guarded
    def ensure_group(self) -> None:
        """Create every band's stream and the group from id 0, so entries added earlier are kept."""
        for key in self.keys:
            try:
                self.client.xgroup_create(key, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _regroup(self, exc: ResponseError) -> bool:
        # the stream vanished (flushed, restarted without persistence): recreate the group
        if "NOGROUP" not in str(exc):
            return False
        log.warning("consumer group %s missing on %s; recreating it from id 0", self.group, self.stream)
        self.ensure_group()
        return True

    # ------------------------------------------------------------ publish

    @_guarded
    def publish(self, messages: Sequence[Message], maxlen: int | None = None,
                conn: Connection | None = None) -> list[str]:
        """XADD each message to its band's stream (``MAXLEN ~``) in one MULTI/EXEC."""
        if not messages:
            return []
        cap = maxlen if maxlen is not None else self.maxlen
        bands = [band_of(m.priority) for m in messages]
        pipe = self.client.pipeline(transaction=True)
        for m, band in zip(messages, bands):
            fields: dict[Any, Any] = {k: str(v) for k, v in m.fields.items() if v is not None}
            fields["job_id"] = m.job_id
            fields.setdefault("priority", str(m.priority))
            pipe.xadd(self.key(band), fields, maxlen=cap or None, approximate=True)
        rids = pipe.execute()
        return [self._external(b, r) for b, r in zip(bands, rids)]

    # ------------------------------------------------------------ read

    def _order(self) -> list[int]:
        self._reads += 1
        idx = list(range(len(BANDS)))
        return idx[::-1] if self._reads % FAIR_EVERY == 0 else idx

    @_guarded
    def read(self, consumer: str, count: int, block_ms: int = 0) -> list[Entry]:
        """Deliver up to ``count`` new entries, higher bands first, blocking up to ``block_ms``."""
        if count <= 0:
            return []
        deadline = time.monotonic() + block_ms / 1000.0
        order = self._order()
        keys = [self.keys[i] for i in order]
        regrouped = False
        while True:
            try:
                found, data = self._read_script(keys=keys, args=[self.group, consumer, count])
            except ResponseError as exc:
                if regrouped or not self._regroup(exc):
                    raise
                regrouped = True
                continue
            if found:
                out = []
                for i, rid, flat in data:
                    band = BANDS[order[int(i) - 1]]
                    fields = dict(zip(flat[::2], flat[1::2]))
                    out.append(Entry(self._external(band, rid), fields.get("job_id", ""), fields, 1))
                return out
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return []
            # wait for anything newer than what the script saw; then try to take it
            self.client.xread(dict(zip(keys, data)), count=1, block=min(left_ms, _BLOCK_CHUNK_MS))

    # ------------------------------------------------------------ ack / touch

    def _keyed(self, entry_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        keys, rids = [], []
        for band, ids in self._by_band(entry_ids).items():
            for rid in ids:
                keys.append(self.key(band))
                rids.append(rid)
        return keys, rids

    @_guarded
    def ack(self, entry_ids: Sequence[str], conn: Connection | None = None) -> int:
        """XACK (then XDEL) entries; returns how many were pending (``conn`` is not used: Redis is not the DB)."""
        keys, rids = self._keyed(entry_ids)
        if not keys:
            return 0
        return int(self._ack_script(keys=keys, args=[self.group, *rids]))

    @_guarded
    def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """``XCLAIM … JUSTID`` to itself: resets the idle time of entries this consumer still owns."""
        keys, rids = self._keyed(entry_ids)
        if keys:
            self._touch_script(keys=keys, args=[self.group, consumer, *rids])

    # ------------------------------------------------------------ reclaim

    @staticmethod
    def _parse_cursor(cursor: str) -> tuple[int, str]:
        if not cursor or cursor == START_CURSOR:
            return 0, "0-0"
        idx, _, rid = cursor.partition("/")
        if not idx.isdigit() or int(idx) >= len(BANDS) or not _RID.match(rid):
            return 0, "0-0"
        return int(idx), rid

    @_guarded
    def reclaim(self, consumer: str, min_idle_ms: int, cursor: str = START_CURSOR,
                count: int = 100) -> Reclaimed:
        """XAUTOCLAIM idle entries band by band; the cursor (``band/id``) resumes where the last round stopped."""
        idx, rid = self._parse_cursor(cursor)
        got: list[tuple[str, str, dict[str, str]]] = []
        deleted: list[str] = []
        regrouped = False
        while idx < len(BANDS) and len(got) < count:
            band = BANDS[idx]
            try:
                res = self.client.xautoclaim(self.key(band), self.group, consumer, min_idle_ms, rid,
                                             count=count - len(got))
            except ResponseError as exc:
                if regrouped or not self._regroup(exc):
                    raise
                regrouped = True
                continue
            nxt, claimed = res[0], res[1]
            # Redis 7 drops ids whose entry was trimmed from the PEL itself and reports them;
            # their jobs are found by the repair loop (the queue no longer holds them)
            gone = res[2] if len(res) > 2 else []
            deleted += [self._external(band, g) for g in gone]
            for item in claimed:
                if item is None or item[1] is None:  # Redis 6.2 reports a deleted entry this way
                    continue
                got.append((band, item[0], dict(item[1])))
            if nxt == "0-0":
                idx, rid = idx + 1, "0-0"
            else:
                rid = nxt
                break
        next_cursor = START_CURSOR if idx >= len(BANDS) else f"{idx}/{rid}"
        if not got:
            return Reclaimed(next_cursor, [], deleted)
        pipe = self.client.pipeline(transaction=False)
        for band, r, _ in got:
            pipe.xpending_range(self.key(band), self.group, min=r, max=r, count=1)
        counts = []
        for info in pipe.execute():
            counts.append(int(info[0]["times_delivered"]) if info else 2)
        entries = [Entry(self._external(band, r), f.get("job_id", ""), f, n)
                   for (band, r, f), n in zip(got, counts)]
        return Reclaimed(next_cursor, entries, deleted)

    # ------------------------------------------------------------ inspection

    def _groups(self, pipe_results: Any) -> dict[str, Any] | None:
        if isinstance(pipe_results, Exception):
            return None
        for g in pipe_results:
            if g.get("name") == self.group:
                return dict(g)
        return None

    @_guarded
    def held(self, entry_ids: Sequence[str]) -> set[str]:
        """Entries Redis can still deliver: in the stream and either undelivered or pending.

        An id left in the PEL after its entry was trimmed is not held: no consumer can
        ever receive its fields again, so the job needs republishing.
        """
        by_band = self._by_band(entry_ids)
        if not by_band:
            return set()
        pipe = self.client.pipeline(transaction=False)
        plan: list[tuple[str, list[str]]] = []
        for band, rids in by_band.items():
            key = self.key(band)
            pipe.xinfo_groups(key)
            for r in rids:
                pipe.xrange(key, r, r, count=1)
                pipe.xpending_range(key, self.group, min=r, max=r, count=1)
            plan.append((band, rids))
        res = pipe.execute(raise_on_error=False)
        out: set[str] = set()
        pos = 0
        for band, rids in plan:
            group = self._groups(res[pos])
            pos += 1
            last = group["last-delivered-id"] if group else "0-0"
            for r in rids:
                present, pend = res[pos], res[pos + 1]
                pos += 2
                if isinstance(present, Exception) or not present:
                    continue
                undelivered = group is None or _rid_key(r) > _rid_key(last)
                pending = not isinstance(pend, Exception) and bool(pend)
                if undelivered or pending:
                    out.add(self._external(band, r))
        return out

    @_guarded
    def pressure(self) -> Pressure:
        """XLEN, XPENDING summary and XINFO GROUPS lag over every band; ages from entry ids on Redis's clock."""
        pipe = self.client.pipeline(transaction=True)
        pipe.time()
        for key in self.keys:
            pipe.xlen(key)
            pipe.xpending(key, self.group)
            pipe.xinfo_groups(key)
        res = pipe.execute(raise_on_error=False)
        if isinstance(res[0], Exception):
            raise res[0]
        sec, usec = res[0]
        now_ms = int(sec) * 1000 + int(usec) // 1000
        length = pending = 0
        lag: int | None = 0
        oldest_pending: int | None = None
        lasts: list[tuple[str, str]] = []
        for i, key in enumerate(self.keys):
            xlen, summ, groups = res[1 + 3 * i: 4 + 3 * i]
            length += 0 if isinstance(xlen, Exception) else int(xlen)
            if not isinstance(summ, Exception) and summ and summ.get("pending"):
                pending += int(summ["pending"])
                m = _ms(summ["min"])
                oldest_pending = m if oldest_pending is None else min(oldest_pending, m)
            g = self._groups(groups)
            if g is None:
                # no group yet: everything in the stream is waiting
                n = 0 if isinstance(xlen, Exception) else int(xlen)
                lag = None if lag is None else lag + n
                lasts.append((key, "-"))
                continue
            glag = g.get("lag")
            lag = None if (lag is None or glag is None) else lag + int(glag)
            lasts.append((key, "(" + g["last-delivered-id"]))
        if oldest_pending is not None:
            return Pressure(length, pending, lag, max(0, now_ms - oldest_pending), "pending", lag is None)
        pipe = self.client.pipeline(transaction=False)
        for key, start in lasts:
            pipe.xrange(key, start, "+", count=1)
        firsts = [r[0][0] for r in pipe.execute() if r]
        if not firsts:
            return Pressure(length, pending, lag, None, None, lag is None)
        age = max(0, now_ms - min(_ms(f) for f in firsts))
        return Pressure(length, pending, lag, age, "undelivered", lag is None)

    # ------------------------------------------------------------ maintenance

    @_guarded
    def trim(self, maxlen: int) -> int:
        """``XTRIM MAXLEN =`` each band's stream (exact, so GC does what it says)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xtrim(key, maxlen=maxlen, approximate=False)
        return sum(int(n) for n in pipe.execute())

    @_guarded
    def delete_streams(self) -> None:
        """Delete every band's stream and its group (tests, decommissioning)."""
        self.client.delete(*self.keys)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()
