"""Regenerate docs/reference/errors.md from conveyor/errors.py: python docs/reference/gen_errors.py"""

import importlib
from pathlib import Path

from conveyor.errors import CORE_CODES

#: first-party plugins: (plugin module, title, the page that explains their codes)
PLUGINS = (
    ("conveyor_sandbox.plugin", "The sandbox plugin (`conveyor-sandbox`)", "../sandbox.md"),
    ("conveyor_judge.plugin", "The judge plugin (`conveyor-judge`)", "../judge.md"),
    ("conveyor_cad.plugin", "The CAD plugin (`conveyor-cad`)", "../cad.md"),
)

HEADER = """# Error codes

Every failed or cancelled job carries one `error_code` from a single catalog. This page
lists the codes of the core, then those of the first-party plugins. It is generated from
`conveyor.errors.CORE_CODES` and each plugin's `conveyor_error_codes`
(`python docs/reference/gen_errors.py`), and `tests/test_docs.py` fails when a code
has no entry here.

The live catalog, including the codes that installed plugins add, is printed by:

```sh
conveyor errors          # text
conveyor errors --json   # one object per code: code, retryable, meaning, next_step, source
```

How a code is used:

- A handler ends its attempt with `raise JobError(code, message)`. Whether the job is
  retried follows the catalog's `retryable` flag, unless the handler passes
  `retryable=True` or `retryable=False` (see [write a job kind](../howto/job-kind.md)).
- A retryable failure is queued again after an exponential backoff with jitter, until
  the job has used `max_attempts`. Then it ends `failed` with that code.
- A code that is not in the catalog is treated as not retryable.
- Plugins add codes with the `conveyor_error_codes` hook
  (see [write a plugin](../howto/plugin.md)). A code that a plugin defines again with a
  different meaning or policy is rejected, and `conveyor plugins` reports that plugin
  as failed. Prefix your codes with your plugin's name.

`conveyor diagnose JOB_ID` prints the meaning and next step of the code a job failed with.

The [HTTP API](../api.md) answers every error with `{"error": {"code", "message", "detail"}}`
and a code from this catalog. Some codes are only ever answers of the API, never a job's
`error_code` (`unauthorized`, `forbidden`, `not_found`, `invalid_request`,
`request_too_large`, `quota_exceeded`, `illegal_transition`, `unavailable`); their "Set by"
line gives the HTTP status.

| code | retryable | meaning |
|---|---|---|
"""


#: codes the core itself sets, and where
SET_BY = {
    "invalid_payload": "Handlers raise it. `submit` also refuses a payload that is not plain JSON "
                       "(NaN or Infinity, keys that are not strings, sets, bytes, objects) or that nests "
                       "arrays and objects more than 64 levels deep, with the exception "
                       "`conveyor.errors.InvalidPayload` (also importable from `conveyor.store`) carrying "
                       "this code; then nothing is written. The message names where: "
                       "`payload[\"x\"][1] is inf`.",
    "payload_too_large": "`submit` raises `conveyor.errors.InvalidPayload` with it when the payload, encoded "
                         "as compact JSON in UTF-8, is larger than `CONVEYOR_MAX_PAYLOAD_BYTES` (default "
                         "1048576, see [configuration](config.md#settings)), and writes nothing; "
                         "`conveyor submit` exits 2. A job ends with it only if its handler submits such a "
                         "payload and lets the exception escape.",
    "invalid_job": "`submit` raises `conveyor.errors.InvalidJob` with it (its `field` attribute names the "
                   "field) and writes nothing; `conveyor submit` and `conveyor jobs cancel` exit 2. The "
                   "bounds are listed in [operations](../operations.md#bounds-checked-at-submit). A job ends "
                   "with it only if its handler submits such a job and lets the exception escape.",
    "handler_not_found": "The worker, when no plugin it loaded registers the job's kind. "
                         "The kind must be installed on every worker host.",
    "timeout": "The worker, when an attempt runs longer than its kind's `timeout_s`; also "
               "`ctx.run_subprocess(..., timeout=...)` when the child outlives its own limit.",
    "lease_lost": "The claim of an expired lease (written to `error_history` before the next "
                  "attempt), and the final error of a job whose last attempt lost its lease "
                  "(set by a worker's claim or by the scheduler's repair loop).",
    "cancelled": "`conveyor jobs cancel` and `Conveyor.cancel`.",
    "internal_error": "The worker, when a handler raises anything but `JobError`. The message "
                      "holds the traceback. It is always retried, whatever the catalog says.",
    "queue_pressure": "Never a job's code: `submit` raises `conveyor.errors.QueuePressure` "
                      "with it, and `conveyor submit` exits with status 75. The HTTP API answers "
                      "`429` with a `Retry-After` header.",
    "unauthorized": "The HTTP API, status `401` with `WWW-Authenticate: Bearer`: no token, a token "
                    "that is expired, forged, for another audience or issuer, signed with `none` or an "
                    "algorithm other than the configured key's, or lacking `sub` or `exp`.",
    "forbidden": "The HTTP API, status `403`: `x-tenant-id` or `x-org-id` names a tenant or org the "
                 "token does not allow, an admin-only route (`/api/v1/plugins`), or `/api/v1/metrics` "
                 "from a remote client without `CONVEYOR_METRICS_TOKEN`.",
    "not_found": "The HTTP API, status `404`: no such job, or a job of another tenant or org (the answer "
                 "is the same, so ids reveal nothing), or no such route.",
    "invalid_request": "The HTTP API, status `422`: a body that is not JSON (or not UTF-8, or nested more "
                       "than 65 levels), a missing or mistyped field, a bad query parameter, header or cursor. "
                       "`detail` lists each problem with its location.",
    "request_too_large": "The HTTP API, status `413`, before the body is parsed: a JSON body larger than "
                         "twice `CONVEYOR_MAX_PAYLOAD_BYTES` (at least the payload limit + 64 KiB), or an "
                         "upload larger than `CONVEYOR_MAX_UPLOAD_BYTES`.",
    "quota_exceeded": "`submit` raises `conveyor.errors.QuotaExceeded` with it when "
                      "`CONVEYOR_TENANT_MAX_ACTIVE_JOBS` is set and the tenant already has that many jobs "
                      "queued or running; `conveyor submit` exits 75, the HTTP API answers `429` with "
                      "`Retry-After`.",
    "illegal_transition": "The HTTP API, status `409`: cancelling a job that is already final, retrying "
                          "one that is not `failed` or `cancelled`. The CLI prints the same refusal and "
                          "exits 1.",
    "unavailable": "The HTTP API, status `503` with `Retry-After`: the database or queue did not answer. "
                   "`GET /api/v1/health` answers `503` when the database, queue or storage is down.",
}


def render() -> str:
    out = [HEADER.rstrip("\n")]
    for c in CORE_CODES:
        out.append(f"| [`{c.code}`](#{c.code}) | {'yes' if c.retryable else 'no'} | {c.meaning} |")
    out.append("")
    for c in CORE_CODES:
        out += [f"## `{c.code}`", "", f"- Retryable: {'yes' if c.retryable else 'no'}",
                f"- Meaning: {c.meaning}", f"- Next step: {c.next_step}"]
        if c.code in SET_BY:
            out.append(f"- Set by: {SET_BY[c.code]}")
        out.append("")
    out += ["# Codes of the first-party plugins", "",
            "Each plugin contributes these with `conveyor_error_codes` when it is installed; its own page "
            "says where it sets them.", ""]
    for module, title, page in PLUGINS:
        out += [f"## {title}", "", f"See [{page.removeprefix('../')}]({page}).", "",
                "| code | retryable | meaning | next step |", "|---|---|---|---|"]
        for c in importlib.import_module(module).conveyor_error_codes():
            out.append(f"| `{c.code}` | {'yes' if c.retryable else 'no'} | {c.meaning} | {c.next_step} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    Path(__file__).with_name("errors.md").write_text(render())
