"""The dashboard's job list reads an index, not the table: PostgreSQL's plan for a page, checked with EXPLAIN."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from conveyor.store import JobSpec, Scope, page_query

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def plan(app, stmt) -> dict:
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with app.engine.connect() as c:
        found = c.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()
    return (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]


def nodes(node: dict) -> list[dict]:
    return [node, *[n for child in node.get("Plans", []) for n in nodes(child)]]


@pytest.fixture
def many_jobs(api_app):
    """Two tenants with 3,000 jobs each, and fresh statistics (as a busy table has)."""
    for tenant in ("acme", "globex"):
        for start in range(0, 3000, 500):
            api_app.submit_many([JobSpec("conveyor.echo", {"i": i}, tenant=tenant) for i in range(start, start + 500)])
    with api_app.engine.connect() as c:
        c.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE conveyor_jobs"))
    return api_app


@pytest.mark.parametrize("filters", [{}, {"status": "queued"}, {"kind": "conveyor.echo"}])
def test_a_tenants_page_is_an_index_scan_newest_first_with_no_sort(many_jobs, filters):
    root = plan(many_jobs, page_query(Scope("acme"), limit=51, **filters))
    found = nodes(root)
    kinds = [n["Node Type"] for n in found]
    assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
    scans = [n for n in found if n["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert [s["Index Name"] for s in scans] == ["ix_conveyor_jobs_tenant_created"]
    assert scans[0]["Scan Direction"] == "Backward"


def test_the_next_page_starts_inside_the_index(many_jobs):
    first = many_jobs.store.page_jobs(Scope("acme"), limit=50)
    root = plan(many_jobs, page_query(Scope("acme"), limit=51,
                                      before=(first[-1].created_at, first[-1].id)))
    kinds = [n["Node Type"] for n in nodes(root)]
    assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
