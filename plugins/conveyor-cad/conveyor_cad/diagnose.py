"""``conveyor diagnose`` findings for ``cad.convert`` jobs."""

from __future__ import annotations

import time
from typing import Any

from conveyor_cad.files import get_file, key_of_url
from conveyor_cad.hookspecs import CONVERTERS
from conveyor_cad.routing import CadConfig, choose
from conveyor_sandbox.hookspecs import SANDBOXES


def _finding(check: str, ok: bool, detail: str, next_step: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"check": check, "ok": ok, "detail": detail, "next_step": next_step, **extra}


def diagnose(job: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Input in storage (with the check's latency), format, converter chosen, outputs and the last error."""
    app = context.get("app")
    if app is None:
        from conveyor.plugin_api import Conveyor
        app = Conveyor()
    payload = job.get("payload") if isinstance(job.get("payload"), dict) else {}
    file_id = (payload or {}).get("file_id") or job.get("file_id")
    if not file_id:
        return [_finding("cad file", False, "the job has no file_id", "submit with payload {\"file_id\": ...}",
                         cause_code="missing_file_id", evidence=["payload has no file_id", "job row has no file_id"])]
    rec = get_file(app.engine, file_id)
    if rec is not None and rec.tenant_id != (job.get("tenant_id") or "default"):
        rec = None  # another tenant's file is no file of this job's: it is neither shown nor converted
    if rec is None:
        return [_finding("cad file", False, f"no file {file_id} in tenant {job.get('tenant_id')!r}",
                         "the file was never added, was deleted, or belongs to another tenant; add it again with "
                         "`conveyor files add`", cause_code="file_not_found",
                         evidence=[f"no conveyor_files row {file_id} in this tenant"])]
    out = []
    key = key_of_url(app, rec.system_path)
    t0 = time.perf_counter()
    try:
        exists = app.storage.exists(key) if key is not None else None
        error = None
    except Exception as exc:
        exists, error = None, f"{type(exc).__name__}: {exc}"
    latency_ms = round((time.perf_counter() - t0) * 1000, 2)
    if error:
        out.append(_finding("cad source", False, f"storage check of {rec.system_path} failed in {latency_ms} ms: "
                            f"{error}", "run `conveyor doctor`", storage_path=rec.system_path,
                            storage_exists=None, latency_ms=latency_ms))
    else:
        out.append(_finding("cad source", exists is not False,
                            f"{rec.filename} ({rec.size} bytes) at {rec.system_path}: "
                            f"{'present' if exists else 'MISSING' if exists is False else 'outside this storage'} "
                            f"(checked in {latency_ms} ms)",
                            None if exists is not False else "re-upload the file; a gc or retention run may have "
                            "deleted it", storage_path=rec.system_path, storage_exists=exists, latency_ms=latency_ms,
                            **({"cause_code": "source_missing",
                                "evidence": [f"{rec.system_path} is not in storage"]} if exists is False else {})))
    route = None
    try:
        route = choose(app.plugins.registry(CONVERTERS), rec.cad_format, rec.tenant_id, CadConfig.load(),
                       (payload or {}).get("converter"))
    except Exception as exc:
        out.append(_finding("cad routing", False, f"routing configuration is invalid: {exc}",
                            "fix CONVEYOR_CAD_ROUTING / CONVEYOR_CAD_TENANT_ROUTING"))
    out.append(_finding("cad format", route is not None,
                        f"format {rec.cad_format or 'not recognised'}; converter "
                        f"{route.describe_route() if route else 'none'}"
                        + (f" ({route.policy.value})" if route else ""),
                        None if route else "install a converter plugin for the format (`conveyor cad formats`)",
                        cad_format=rec.cad_format, converter=route.describe_route() if route else None))
    for role, path in (("preview", rec.preview_path), ("geometry", rec.geometry_path)):
        present = path is not None and bool(path) and app.storage.exists(path)
        out.append(_finding(f"cad {role}", present or rec.conversion_status not in ("done", "partial"),
                            f"{path} {'exists' if present else 'is missing'}" if path else "not written",
                            None if present or not path else "convert again: `conveyor submit cad.convert "
                            f"'{{\"file_id\": \"{rec.id}\"}}'`", path=path, exists=present))
    err = rec.conversion_error or {}
    out.append(_finding("cad conversion", rec.conversion_status in ("done", "pending", "processing"),
                        f"status {rec.conversion_status}"
                        + (f"; {err.get('code')} at stage {err.get('stage')} in converter {err.get('converter')}: "
                           f"{err.get('message')}" if err else "")
                        + (f"; converter output: {err['output'][-400:]!r}" if err.get("output") else ""),
                        "see the connector's log and `conveyor doctor` (cad connector)"
                        if err.get("code") == "connector_failed" else None, conversion_status=rec.conversion_status,
                        **({"cause_code": "connector_failed", "evidence": [f"connector_failed at stage "
                                                                           f"{err.get('stage')}: {err.get('message')}"]}
                           if err.get("code") == "connector_failed" and rec.conversion_status == "failed" else {})))
    return out


LIBRARIES = (("trimesh", "trimesh"), ("cascadio", "cascadio"), ("ezdxf", "ezdxf"), ("matplotlib", "matplotlib"),
             ("numpy", "numpy"), ("PIL", "pillow"), ("lxml", "lxml"), ("networkx", "networkx"))


def doctor(app: Any) -> list[dict[str, Any]]:
    """Findings for ``conveyor doctor``: the cad extra's libraries, the routing config, the connector."""
    import importlib
    import urllib.error
    import urllib.request
    from importlib import metadata

    out = []
    for module, dist in LIBRARIES:
        try:
            importlib.import_module(module)
            version = metadata.version(dist)
            out.append(_finding(f"cad library {dist}", True, f"{dist} {version}"))
        except Exception as exc:
            out.append(_finding(f"cad library {dist}", False, f"{dist} cannot be imported: {exc}",
                                "pip install 'conveyor-jobs[cad]' on this host"))
    try:
        cfg = CadConfig.load()
    except Exception as exc:
        return [*out, _finding("cad config", False, str(exc), "fix the CONVEYOR_CAD_* variables or [cad] table")]
    routes = ", ".join(f"{k}={v.value}" for k, v in cfg.routes.items()) or "every format local"
    out.append(_finding("cad config", True, f"time limit {cfg.time_limit_s:g}s, memory {cfg.memory_mb} MB, "
                        f"outputs up to {cfg.output_mb} MiB, routing: {routes}"))
    out.append(isolation_finding(app, cfg))
    if cfg.connector_url:
        t0 = time.perf_counter()
        try:
            urllib.request.urlopen(cfg.connector_url, timeout=min(5.0, cfg.connector_timeout_s)).close()
            reachable, detail = True, "answered"
        except urllib.error.HTTPError as exc:
            reachable, detail = True, f"answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reachable, detail = False, f"unreachable: {getattr(exc, 'reason', exc)}"
        ms = round((time.perf_counter() - t0) * 1000, 1)
        out.append(_finding("cad connector", reachable, f"{cfg.connector_url} {detail} in {ms} ms",
                            None if reachable else "check CONVEYOR_CAD_CONNECTOR_URL and the service's health"))
    return out


def isolation_finding(app: Any, cfg: Any) -> dict[str, Any]:
    """How conversions are isolated on this host: a sandbox box, or the fork fallback and why."""
    import os

    from conveyor_cad.isolation import isolation_mode

    try:
        registry = app.plugins.registry(SANDBOXES)
    except Exception:
        registry = None
    mode, sandbox, why = isolation_mode(cfg, registry)
    if sandbox is not None:
        return _finding("cad isolation", True, f"conversions run in sandbox {sandbox.id!r}: own uid, no network, "
                        "only the input, its output folder and the Python installation visible "
                        f"(CONVEYOR_CAD_ISOLATION={cfg.isolation})")
    if mode == "sandbox":
        return _finding("cad isolation", False, f"CONVEYOR_CAD_ISOLATION=sandbox but no sandbox can run here: {why}; "
                        "every conversion fails with sandbox_error", "run `conveyor sandbox doctor` on this host")
    root = os.geteuid() == 0
    detail = (f"conversions run WITHOUT a sandbox ({mode}: rlimits only, as uid {os.geteuid()}, seeing this "
              f"host's files): {why}")
    # as root that is the whole host; as another user it is what the worker itself can reach
    return _finding("cad isolation", not root, detail,
                    "run workers as root on a host with namespaces and the C sandbox built (`conveyor sandbox "
                    "doctor`), or accept the weaker isolation for trusted files only")
