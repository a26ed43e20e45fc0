"""Property-based fuzzing of the OpenAPI document (schemathesis): no 500, no answer outside the schema.

Every operation but the event streams (they stay open) and the test plugin's routes gets
generated requests, valid and invalid (schemathesis' positive and negative modes), over
real HTTP against a SQLite deployment; each answer must be a documented status with a
documented content type, headers and body. Half of the generated job ids are swapped for
real jobs in every status, so reads, cancels and retries of existing jobs are fuzzed too.
"""

from __future__ import annotations

import zlib

import pytest
import schemathesis
from api_support import API_PLUGINS, SECRET, Server, auth, make_app, token
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.api.app import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_deployment(tmp_path_factory):
    from pipeline_support import Pipeline
    d = tmp_path_factory.mktemp("fuzz")
    env = {"CONVEYOR_DB_URL": f"sqlite:///{d}/conveyor.db", "CONVEYOR_STORAGE_URL": f"file://{d}/data",
           "CONVEYOR_JWT_SECRET": SECRET, "CONVEYOR_PLUGINS": API_PLUGINS, "CONVEYOR_MAX_PAYLOAD_BYTES": "20000"}
    app = make_app(env)
    app.init_db()
    done = [app.submit("conveyor.echo", {"x": 1}), app.submit("conveyor.fail", {"code": "conversion_failed"}),
            app.submit("test.boom", max_attempts=1)]
    with Pipeline(app, concurrency=2) as p:
        p.wait(done)
    waiting = [app.submit("conveyor.sleep", {"seconds": 1}, run_at=None) for _ in range(3)]
    app.cancel(waiting[0])
    with Server(create_app(app)) as s:
        yield s.url, done + waiting
    app.close()
    app.engine.dispose()


def test_every_operation_answers_within_its_schema(fuzz_deployment):
    url, job_ids = fuzz_deployment
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    schema = schema.exclude(path_regex=r"/stream$").exclude(path_regex=r"^/api/v1/testroutes/")
    headers = auth(token("fuzz", admin=True))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    tried = 0

    def real_ids(case) -> None:
        params = case.path_parameters or {}
        if isinstance(params.get("job_id"), str):
            n = zlib.crc32(params["job_id"].encode())
            if n % 2:
                params["job_id"] = job_ids[n % len(job_ids)]

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case):
                nonlocal tried
                real_ids(case)
                tried += 1
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                continue
            except Exception as exc:
                raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc
    assert tried > 10 * EXAMPLES
