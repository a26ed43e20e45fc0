"""A submission compiles only a source of its own tenant; another tenant's object looks exactly like none."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert

from conveyor.db import utcnow
from conveyor_cad.schema import files
from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package, program
from conveyor_judge.sources import source_key

#: in acme's source: a compile error echoes it, so an evil compile would give it away
SECRET = "ACME_TRADE_SECRET_7f3a9"
ACME_SOURCE = f"int main(void) {{ return {SECRET}; }}\n"


def _file_row(app, tenant: str, key: str) -> str:
    """A conveyor_files row of ``tenant`` for the object at ``key`` (as a host or the CAD plugin writes them)."""
    file_id = str(uuid.uuid4())
    now = utcnow()
    with app.engine.begin() as conn:
        conn.execute(insert(files).values(id=file_id, tenant_id=tenant, filename=key.rsplit("/", 1)[-1],
                                          system_path=app.storage.url(key), size=1, created_at=now, updated_at=now))
    return file_id


def _run(app, pipeline, jobs: list[tuple[str, dict]]) -> list:
    ids = [app.submit("judge.submission", payload, tenant=tenant) for tenant, payload in jobs]
    with pipeline(concurrency=2) as p:
        return p.wait(ids, timeout=180)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_tenant_cannot_compile_another_tenants_source(app, pipeline):
    catalog = app.plugins.catalog
    assert catalog.get("source_not_found") is not None and not catalog.is_retryable("source_not_found")
    pid = ProblemStore(app.storage).add(aplusb_package()).id
    acme_key = source_key("acme", "secret.c")
    app.storage.put(acme_key, ACME_SOURCE.encode())
    good_key = source_key("acme", "good.c")
    app.storage.put(good_key, program("c", "aplusb").encode())
    cad_key = f"files/{uuid.uuid4()}/secret.c"  # a file acme uploaded through the files table
    app.storage.put(cad_key, ACME_SOURCE.encode())
    _file_row(app, "acme", cad_key)
    missing = source_key("acme", "nothing-here.c")

    def sub(key: str) -> dict:
        return {"problem_id": pid, "language": "c", "source_key": key}

    jobs = _run(app, pipeline, [
        ("acme", sub(good_key)),      # the owner judges its own source
        ("acme", sub(cad_key)),       # and its own file
        ("evil", sub(acme_key)),      # another tenant's source: refused
        ("evil", sub(missing)),       # an absent key: the very same refusal
        ("evil", sub(cad_key)),       # another tenant's file
        ("evil", sub("submissions/evil/../acme/secret.c")),
        ("evil", sub(f"problems/{ProblemStore(app.storage).info(pid).sha256}.zip")),  # test data is never a source
    ])
    assert jobs[0].status.value == "succeeded" and jobs[0].result["verdict"] == "accepted"
    assert jobs[1].status.value == "succeeded" and jobs[1].result["verdict"] == "compile_error"
    for job in jobs[2:]:
        assert job.status.value == "failed" and job.error_code == "source_not_found", (job.error_code, job.last_error)
        assert job.attempts == 1, "never retried"
        assert SECRET not in (job.last_error or "") and not job.result
    # nothing tells an existing object of another tenant from a missing one
    foreign, absent = jobs[2].last_error, jobs[3].last_error
    assert foreign.replace(acme_key, "KEY") == absent.replace(missing, "KEY")
    assert "acme" not in foreign.replace(acme_key, "")


def test_source_keys_are_one_component_per_tenant():
    from conveyor_judge.sources import tenant_prefix
    assert source_key("acme", "a/b.c") == "submissions/acme/a/b.c"
    assert source_key("acme", "../../acme2/x.c") == "submissions/acme/acme2/x.c"
    assert tenant_prefix("ac/me") == "submissions/ac%2Fme/" and tenant_prefix("..") == "submissions/%2E%2E/"
    assert not source_key("ac/me", "x.c").startswith(tenant_prefix("ac"))
    with pytest.raises(ValueError):
        source_key("acme", "/")
