"""conveyor.client: Client and AsyncClient against a real server and worker."""

from __future__ import annotations

import asyncio

import pytest
from api_support import token

from conveyor.client import ApiError, AsyncClient, Client, parse_sse
from conveyor.errors import WaitTimeout


def test_client_submits_waits_cancels_retries_and_streams(server, pipeline_factory):
    with Client(server, token("alice")) as c:
        job = c.submit("test.flaky", {"succeed_on": 2}, max_attempts=1, idempotency_key="k1")
        assert c.submit("test.flaky", {"succeed_on": 2}, idempotency_key="k1")["id"] == job["id"]
        with pytest.raises(WaitTimeout) as exc:
            c.wait(job["id"], timeout=0.5)  # no worker yet
        assert exc.value.status == "queued"
        with pipeline_factory():
            failed = c.wait(job["id"], timeout=60)
            assert failed["status"] == "failed" and failed["diagnostics"]["cause"]
            assert c.retry(job["id"])["status"] == "queued"
            done = c.wait(job["id"], timeout=60)
            assert done["status"] == "succeeded" and done["attempt_id"] == 2
        actions = [e["action"] for e in c.events(job["id"])]
        assert actions[0] == "submitted" and actions[-1] == "succeeded" and "retried" in actions
        recorded = done["events"]
        resumed = list(c.events(job["id"], last_event_id=recorded[-2]["id"]))
        assert resumed == [recorded[-1]]
        sleeper = c.submit("conveyor.sleep", {"seconds": 30})
        assert c.cancel(sleeper["id"], "changed my mind")["status"] == "cancelled"
        page = c.list(limit=1)
        assert len(page["items"]) == 1 and page["next_cursor"]
        assert c.list(limit=1, cursor=page["next_cursor"])["items"][0]["id"] == job["id"]
        with pytest.raises(ApiError) as err:
            c.cancel(sleeper["id"])
        assert err.value.status == 409 and err.value.code == "illegal_transition"
        with pytest.raises(ApiError) as err:
            c.get("00000000-0000-4000-8000-000000000000")
        assert err.value.status == 404 and err.value.code == "not_found"
    with Client(server + "/api/v1", "bad-token") as c, pytest.raises(ApiError) as err:
        c.list()
    assert err.value.status == 401 and err.value.code == "unauthorized"


def test_async_client(server, pipeline_factory):
    async def main():
        async with AsyncClient(server, token("bob", tenant="b")) as c:
            job = await c.submit("conveyor.echo", {"n": 7})
            assert job["tenant_id"] == "b"
            with pipeline_factory():
                done = await c.wait(job["id"], timeout=60)
            assert done["status"] == "succeeded" and done["result"] == {"n": 7}
            actions = [e["action"] async for e in c.events(job["id"])]
            assert actions == ["submitted", "dispatched", "claimed", "succeeded"]
            assert (await c.list())["items"][0]["id"] == job["id"]
            with pytest.raises(ApiError) as err:
                await c.retry(job["id"])
            assert err.value.code == "illegal_transition"
            other = await c.submit("conveyor.sleep", {"seconds": 30})
            assert (await c.cancel(other["id"]))["status"] == "cancelled"
            assert (await c.retry(other["id"]))["status"] == "queued"
            assert (await c.get(other["id"]))["status"] == "queued"

    asyncio.run(main())


def test_sse_parser():
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 4", "data: {\"a\": 1}", "", "event: end", "data: {}",
             "", "data: one", "data: two"]
    msgs = list(parse_sse(lines))
    # a message is complete at its blank line; one cut off by the end of the stream is dropped (as browsers do)
    assert [(m.event, m.id, m.data) for m in msgs] == [("message", "4", '{"a": 1}'), ("end", "4", "{}")]
    assert [m.data for m in parse_sse(["data: one", "data: two", ""])] == ["one\ntwo"]
    assert msgs[0].json() == {"a": 1}
