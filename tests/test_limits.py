"""Bounds checked at submit: hostile input is refused with a catalog code and nothing is written."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from conveyor import limits, store
from conveyor.db import utcnow
from conveyor.errors import CATALOG, InvalidJob, InvalidPayload, JobError
from conveyor.schema import events, jobs, outbox
from conveyor.text import printable

MIB = 1024 * 1024


def counts(app):
    with app.engine.connect() as c:
        return tuple(c.execute(select(func.count()).select_from(t)).scalar() for t in (jobs, outbox, events))


def refused(app, code, field=None, **submit):
    """Submit and expect a refusal with ``code``; nothing may be written."""
    kind = submit.pop("kind", "conveyor.echo")
    with pytest.raises(InvalidJob) as info:
        app.submit(kind, **submit)
    assert info.value.code == code, info.value.message
    if field:
        assert info.value.field == field
    assert counts(app) == (0, 0, 0)
    return info.value.message


def nested(depth):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_refusals_are_job_errors_with_catalog_codes_that_do_not_retry():
    for code in ("payload_too_large", "invalid_payload", "invalid_job"):
        assert code in CATALOG and not CATALOG.is_retryable(code)
    assert issubclass(InvalidPayload, InvalidJob) and issubclass(InvalidJob, JobError)
    assert store.InvalidPayload is InvalidPayload


def test_a_100_mb_payload_is_refused_before_anything_is_written(app):
    message = refused(app, "payload_too_large", "payload", payload={"blob": "x" * (100 * MIB)})
    assert "1048576" in message and "CONVEYOR_MAX_PAYLOAD_BYTES" in message


def test_the_payload_limit_counts_utf8_bytes_of_compact_json(app):
    fits = {"s": "x" * 92}  # {"s":"xx…"} is 8 + 92 bytes
    job_id = store.submit(app.engine, "conveyor.echo", fits, max_payload_bytes=100)
    assert app.get(job_id).payload == fits
    with pytest.raises(InvalidPayload, match="payload is 101 bytes of JSON; the limit is 100") as info:
        store.submit(app.engine, "conveyor.echo", {"s": "x" * 91 + "é"}, max_payload_bytes=100)
    assert info.value.code == "payload_too_large"
    with pytest.raises(InvalidPayload, match="payload is 4001 bytes"):  # a list of 1000 strings "x"
        store.submit(app.engine, "conveyor.echo", ["x"] * 1000, max_payload_bytes=3000)
    with pytest.raises(InvalidPayload, match=r"payload is at least \d+ bytes"):  # stopped before encoding
        store.submit(app.engine, "conveyor.echo", [["x"] * 1000] * 1000, max_payload_bytes=1000)
    assert counts(app)[0] == 1


def test_the_payload_limit_follows_the_setting(app):
    from conveyor.app import Conveyor
    small = Conveyor(app.settings.with_(max_payload_bytes=50), engine=app.engine, queue=app.queue,
                     plugins=app.plugins)
    with pytest.raises(InvalidPayload, match=r"the limit is 50 \(CONVEYOR_MAX_PAYLOAD_BYTES\)"):
        small.submit("conveyor.echo", {"s": "y" * 60})
    assert counts(app) == (0, 0, 0)
    assert app.get(app.submit("conveyor.echo", {"s": "y" * 60})).payload == {"s": "y" * 60}


def test_json_nested_60k_deep_is_refused_without_recursion_error(app):
    message = refused(app, "invalid_payload", "payload", payload={"a": nested(60_000)})
    assert "nested more than 64 levels" in message
    cycle: list = []
    cycle.append(cycle)
    assert "contains itself" in refused(app, "invalid_payload", payload=cycle)
    cycle.append(cycle)  # now it doubles at each level: the size bound stops it first
    refused(app, "payload_too_large", payload=cycle)


def test_64_levels_are_accepted_and_come_back_whole(app):
    deep = nested(limits.MAX_DEPTH)
    assert app.get(app.submit("conveyor.echo", deep)).payload == deep
    with pytest.raises(InvalidPayload, match="nested more than 64"):
        app.submit("conveyor.echo", nested(limits.MAX_DEPTH + 1))


@pytest.mark.parametrize("payload,where", [
    ({"x": math.nan}, 'payload["x"] is nan'),
    ({"x": [1, math.inf]}, 'payload["x"][1] is inf'),
    ({"x": -math.inf}, "is -inf"),
    ({1: "one"}, "has the key 1 (int)"),
    ({"k": {(1, 2): 3}}, 'payload["k"] has the key (1, 2) (tuple)'),
    ({"s": {1, 2}}, 'payload["s"] is a set'),
    ({"b": b"bytes"}, 'payload["b"] is a bytes'),
    pytest.param(10 ** 5000, "digits", id="int-of-5001-digits"),
])
def test_values_json_cannot_hold_are_refused(app, payload, where):
    assert where in refused(app, "invalid_payload", "payload", payload=payload)


@pytest.mark.parametrize("priority", [2 ** 63, -(2 ** 63) - 1, 1_000_001, -1_000_001, True, 1.5, "5", None,
                                      pytest.param(10 ** 5000, id="int-of-5001-digits")])
def test_priority_out_of_range_or_not_an_int_is_refused(app, priority):
    assert "-1000000 to 1000000" in refused(app, "invalid_job", "priority", priority=priority)


def test_priority_bounds_are_accepted(app):
    ids = [app.submit("conveyor.echo", priority=p) for p in (limits.PRIORITY_MIN, limits.PRIORITY_MAX)]
    assert [app.get(i).priority for i in ids] == [-1_000_000, 1_000_000]


@pytest.mark.parametrize("max_attempts", [0, -1, 1001, True, 2.0, 2 ** 63])
def test_max_attempts_out_of_range_is_refused(app, max_attempts):
    assert "1 to 1000" in refused(app, "invalid_job", "max_attempts", max_attempts=max_attempts)


@pytest.mark.parametrize("run_at", [
    "tomorrow",
    1_700_000_000,
    "far future",  # replaced below: now + 367 days
    datetime.max.replace(tzinfo=UTC),
    datetime.max.replace(tzinfo=None),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
])
def test_run_at_must_be_a_datetime_within_366_days(app, run_at):
    if run_at == "far future":
        run_at = utcnow() + timedelta(days=367)
    refused(app, "invalid_job", "run_at", run_at=run_at)


def test_run_at_aware_and_in_the_past_are_accepted(app):
    soon = datetime.now(UTC) + timedelta(hours=1)
    job = app.get(app.submit("conveyor.echo", run_at=soon))
    assert job.next_attempt_at == soon.astimezone(UTC).replace(tzinfo=None)
    past = app.get(app.submit("conveyor.echo", run_at=datetime(1, 1, 2, tzinfo=UTC)))
    assert past.next_attempt_at is None


@pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan, 1e300, -1, limits.MAX_DELAY_SECONDS + 1, True,
                                     "soon", None])
def test_delay_must_be_finite_and_within_366_days(seconds):
    with pytest.raises(InvalidJob, match="0 to 31622400") as info:
        limits.check_delay(seconds)
    assert (info.value.code, info.value.field) == ("invalid_job", "delay")


def test_delay_bounds_are_accepted():
    assert limits.check_delay(0) == 0.0 and limits.check_delay("60") == 60.0
    assert limits.check_delay(limits.MAX_DELAY_SECONDS) == 366 * 86400


@pytest.mark.parametrize("kind", ["\x1b]0;pwned\x07conveyor.echo", "conveyor.echo\x1b[2J", "", "two words",
                                  "x" * 101, "k\u202e", "ké", None, 5])
def test_kind_must_be_a_short_identifier(app, kind):
    assert "is not a job kind name" in refused(app, "invalid_job", "kind", kind=kind)


def test_kinds_up_to_100_identifier_characters_are_accepted(app):
    kind = "a-b_c.d:" + "e" * 92
    assert app.get(app.submit(kind)).kind == kind


@pytest.mark.parametrize("field,value,message", [
    ("idempotency_key", "k" * 201, "201 characters; the limit is 200"),
    ("idempotency_key", "key\x1b[31m", "control character U+001B"),
    ("idempotency_key", "key\x00", "control character U+0000"),
    ("tenant", "t" * 201, "the limit is 200"),
    ("tenant", "acme\u202egnp", "control character U+202E"),
    ("org", "o\n", "control character U+000A"),
    ("file_id", "f" * 37, "the limit is 36"),
    ("trace_id", "t" * 65, "the limit is 64"),
    ("idempotency_key", 12, "must be a string"),
])
def test_text_fields_are_bounded_and_printable(app, field, value, message):
    submit = {"tenant" if field == "tenant" else field: value}
    assert message in refused(app, "invalid_job", field, **submit)


def test_text_fields_at_their_limits_are_accepted(app):
    job = app.get(app.submit("conveyor.echo", idempotency_key="k" * 200, tenant="t" * 200, org="ö" * 200,
                             file_id="f" * 36, trace_id="t" * 64))
    assert (len(job.idempotency_key), len(job.tenant_id), job.org_id) == (200, 200, "ö" * 200)


def test_a_batch_with_one_bad_job_writes_nothing_and_names_the_job(app):
    specs = [store.JobSpec("conveyor.echo", {"i": 1}), store.JobSpec("conveyor.echo", priority=2 ** 63)]
    with pytest.raises(InvalidJob, match=r"^job 2 of 2: priority must be"):
        app.submit_many(specs)
    with pytest.raises(InvalidJob, match="job 1 of 2: kind"):
        store.submit_many(app.engine, [store.JobSpec("bad kind"), store.JobSpec("conveyor.echo")])
    assert counts(app) == (0, 0, 0)


def test_a_refusal_leaves_the_host_transaction_usable(app):
    with app.engine.connect() as conn:
        with conn.begin():
            with pytest.raises(InvalidPayload):
                app.submit("conveyor.echo", {"x": math.nan}, conn=conn)
            job_id = app.submit("conveyor.echo", {"x": 1}, conn=conn)
    assert app.get(job_id).payload == {"x": 1} and counts(app) == (1, 1, 1)


def test_refusal_is_checked_before_queue_pressure(app):
    from conveyor.app import Conveyor
    from conveyor.errors import QueuePressure
    strict = Conveyor(app.settings.with_(pressure_max_length=1), engine=app.engine, queue=app.queue,
                      plugins=app.plugins)
    strict.submit("conveyor.echo")
    from conveyor.outbox import Dispatcher, run_until_empty
    run_until_empty(Dispatcher(app.store, app.queue))
    with pytest.raises(InvalidJob):
        strict.submit("conveyor.echo", priority=2 ** 63)
    with pytest.raises(QueuePressure):
        strict.submit("conveyor.echo")


def test_cancel_reason_is_bounded(app):
    job_id = app.submit("conveyor.echo")
    with pytest.raises(InvalidJob, match="reason is 4001 characters"):
        app.cancel(job_id, reason="r" * 4001)
    with pytest.raises(InvalidJob, match="control character U\\+001B"):
        app.cancel(job_id, reason="\x1b[2J")
    assert app.cancel(job_id, reason="duplicate\n\tof another").last_error == "duplicate\n\tof another"


def test_json_text_depth_ignores_brackets_inside_strings():
    assert limits.json_text_depth('{"a": [1, {"b": "]]]}}}[[[["}]}') == 3
    assert limits.json_text_depth('"[[[[\\"[["') == 0
    assert limits.json_text_depth("[" * 60_000 + "]" * 60_000) == 60_000


def test_parse_payload_refuses_what_json_loads_lets_through():
    for text, message in [("[" * 60_000 + "]" * 60_000, "nested more than 64"), ('{"a": NaN}', "NaN"),
                          ('{"a": -Infinity}', "-Infinity"), ('{"a": 1e400}', "is inf"), ("9" * 5000, "digits")]:
        with pytest.raises(InvalidPayload, match=message):
            limits.parse_payload(text)
    assert limits.parse_payload('{"a": [1, "[["]}') == {"a": [1, "[["]}


def test_printable_escapes_terminal_controls():
    hostile = "ok\x1b]0;pwned\x07\x1b[31mred\x9b2J\rfake\u202eevil\ud800"
    shown = printable(hostile)
    assert shown == "ok\\x1b]0;pwned\\x07\\x1b[31mred\\x9b2J\\x0dfake\\u202eevil\\ud800"
    assert printable("line one\nline two\tx", multiline=True) == "line one\nline two\tx"
    assert printable("line one\nline two") == "line one\\x0aline two"
    assert printable("héllo ✓ 日本") == "héllo ✓ 日本" and printable(None) == "None"


@pytest.mark.parametrize("text", ['{"a": [1, 2]}', '"[[[[[[[["', "[" * 40 + "]" * 40, '[{"x": "]]]"}, [[["{{{"]]]]',
                                  "{}" * 50, "[" * 9 + "]" * 9, ""])
@pytest.mark.parametrize("limit", [0, 2, 8, 9, 32])
def test_json_too_deep_agrees_with_the_depth_it_stands_for(text, limit):
    assert limits.json_too_deep(text, limit) == (limits.json_text_depth(text) > limit)
