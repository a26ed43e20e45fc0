"""The ``cad.convert`` job kind: fetch → sniff → convert (isolated) → store derivatives → update the file row.

The core's finalize knows nothing about files, so the handler updates its file row
itself at the end of the attempt, through ``files.update_for_attempt``: one
transaction that changes the row only while ``conveyor_jobs.attempt_id`` still equals
this attempt and the job is ``running``. A stale attempt (lease lost, job reclaimed)
therefore never overwrites the winner's ``preview_path``/``geometry_path``; its own
artifacts stay under its ``jobs/{job_id}/{attempt_id}/`` prefix until gc.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import Cancelled, ConfigError, JobContext, JobError
from conveyor_cad.converter import Converter, ConvertOptions
from conveyor_cad.files import fetch_source, get_file, key_of_url, update_for_attempt
from conveyor_cad.formats import FORMATS, sniff_file
from conveyor_cad.hookspecs import CONVERTERS
from conveyor_cad.isolation import Limits, run_converter
from conveyor_cad.records import ConversionError, ConversionStatus, ConvertOutput, Derivative, FileRecord, Stage
from conveyor_cad.routing import CadConfig, Route, choose
from conveyor_cad.scratch import scratch_dir
from conveyor_sandbox.hookspecs import SANDBOXES

if TYPE_CHECKING:
    from conveyor.plugin_api import Conveyor

log = logging.getLogger("conveyor.cad")

OUTPUT_EXCERPT = 2000


def convert_job(ctx: JobContext) -> dict[str, Any]:
    """Handler of ``cad.convert``: payload ``{"file_id", "converter"?, "preview_size"?}``."""
    app = ctx.services.get("app")
    if app is None:
        raise JobError("internal_error", "cad.convert needs the Conveyor app in ctx.services['app']", retryable=False)
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    file_id = payload.get("file_id") or ctx.file_id
    if not file_id or not isinstance(file_id, str):
        raise JobError("missing_file_id", "cad.convert needs payload.file_id (the id `conveyor files add` printed)")
    rec = get_file(app.engine, file_id, ctx.tenant_id)
    if rec is None:
        raise JobError("file_not_found", f"no file {file_id!r} in tenant {ctx.tenant_id!r}; "
                                         "check the id with `conveyor files show`")
    try:
        cfg = CadConfig.load()
    except ConfigError as exc:
        raise JobError("internal_error", f"the worker's CAD configuration is invalid: {exc}", retryable=False) \
            from None
    return _Attempt(app, ctx, rec, cfg, payload).execute()


class _Attempt:
    def __init__(self, app: Conveyor, ctx: JobContext, rec: FileRecord, cfg: CadConfig,
                 payload: dict[str, Any]) -> None:
        self.app, self.ctx, self.rec, self.cfg, self.payload = app, ctx, rec, cfg, payload
        self.converter_id: str | None = None
        self.captured = ""
        self.timings: dict[str, float] = {}
        self.isolation: dict[str, Any] | None = None

    def _mark(self, values: dict[str, Any]) -> tuple[bool, int, int]:
        ok, attempts, max_attempts = update_for_attempt(self.app.engine, self.rec.id, self.ctx.job_id,
                                                        self.ctx.attempt_id, values)
        if not ok:
            log.warning("cad.convert %s attempt %s is no longer live; file %s left as the live attempt wrote it",
                        self.ctx.job_id, self.ctx.attempt_id, self.rec.id)
        return ok, attempts, max_attempts

    def execute(self) -> dict[str, Any]:
        self._mark({"conversion_status": ConversionStatus.PROCESSING.value, "conversion_error": None})
        with scratch_dir() as tmp:
            try:
                t0 = time.monotonic()
                suffix = Path(self.rec.filename).suffix.lower()[:16]
                src = Path(tmp) / f"source{suffix}"
                try:
                    fetch_source(self.app, self.rec, src)
                except FileNotFoundError:
                    raise ConversionError("source_missing", f"the input {self.rec.system_path} is not in storage "
                                          "(deleted or never written); re-upload the file", Stage.FETCH) from None
                except OSError as exc:
                    raise ConversionError("source_missing", f"cannot read {self.rec.system_path}: {exc}",
                                          Stage.FETCH) from None
                self.timings["fetch_s"] = time.monotonic() - t0
                fmt = self.rec.cad_format or sniff_file(src, self.rec.filename)
                route = choose(self.app.plugins.registry(CONVERTERS), fmt, self.ctx.tenant_id, self.cfg,
                               self.payload.get("converter"))
                if route is None:
                    raise ConversionError("unsupported_format", f"no converter accepts {self.rec.filename!r} "
                                          f"(format {fmt or 'not recognised'}); `conveyor cad formats` lists "
                                          "what is installed", Stage.SNIFF)
                options = ConvertOptions(format=fmt or "", filename=self.rec.filename,
                                         preview_size=int(self.payload.get("preview_size") or self.cfg.preview_size),
                                         tenant=self.ctx.tenant_id, org=self.ctx.org_id,
                                         source_url=self.rec.system_path, source_signed_url=self._signed_url(),
                                         max_expanded_entities=self.cfg.max_expanded_entities)
                t1 = time.monotonic()
                conv, out, warnings = self._run_chain(route, src, Path(tmp) / "out", options)
                self.timings["convert_s"] = time.monotonic() - t1
                result = self._publish(conv, out, warnings, fmt or "")
                self._ended(fmt, result["status"], t0)
                return result
            except ConversionError as err:
                self._ended(self.rec.cad_format, "failed", t0, err.code)
                self._fail(err)
                raise AssertionError("unreachable") from None
            except Cancelled as stop:
                self._ended(self.rec.cad_format, "stopped", t0, stop.code)
                self._stopped(stop)
                raise

    def _ended(self, fmt: str | None, status: str, t0: float, code: str | None = None) -> None:
        """One log line and the conversion metrics for how this attempt ended."""
        from conveyor.plugin_api import logline
        from conveyor_cad.metrics import observe
        observe(fmt, status, time.monotonic() - t0)
        logline("converted", job_id=self.ctx.job_id, attempt_id=self.ctx.attempt_id, file_id=self.rec.id,
                format=fmt, conversion_status=status, error_code=code)

    def _signed_url(self) -> str | None:
        key = key_of_url(self.app, self.rec.system_path)
        if key is None or self.app.storage.protocol in ("file", "memory"):
            return None
        try:
            url = self.app.storage.signed_url(key, 3600)
        except Exception:  # signing is an optimisation: the connector then gets the bytes
            return None
        return url if url.startswith(("http://", "https://")) else None

    def _run_chain(self, route: Route, src: Path, out_dir: Path,
                   options: ConvertOptions) -> tuple[Converter, ConvertOutput, list[str]]:
        warnings: list[str] = []
        for i, conv in enumerate(route.chain):
            self.converter_id = conv.id
            try:
                return conv, self._run_one(conv, src, out_dir / conv.id, options), warnings
            except ConversionError as err:
                if i + 1 < len(route.chain) and err.code not in ("source_missing",):
                    nxt = route.chain[i + 1].id
                    warnings.append(f"{conv.id} failed ({err.code}: {err.message}); converted with {nxt} instead")
                    continue
                raise
        raise ConversionError("unsupported_format", "no converter in the route", Stage.SNIFF)

    def _run_one(self, conv: Converter, src: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        self.ctx.token.raise_if_cancelled()
        if not conv.isolated:
            self.isolation = {"mode": "in-process", "enforced": []}
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                return conv.convert(src, out_dir, options)
            except ConversionError:
                raise
            except Exception as exc:
                raise ConversionError("conversion_failed", f"converter {conv.id!r}: {type(exc).__name__}: {exc}",
                                      Stage.READ) from None
        run = run_converter(conv, src, out_dir, options,
                            Limits(self.cfg.time_limit_s, self.cfg.memory_mb, self.cfg.output_mb), self.ctx.token,
                            cfg=self.cfg, sandboxes=self.app.plugins.registry(SANDBOXES))
        self.captured = run.captured
        self.isolation = {"mode": run.isolation, "enforced": list(run.enforced)}
        self.ctx.token.raise_if_cancelled()
        if run.error is not None:
            raise run.error
        assert run.output is not None
        return run.output

    def _put(self, name: str, path: Path, role: str, fmt: str, mime: str,
             messages: tuple[str, ...] = ()) -> Derivative:
        key = self.ctx.key(name)
        try:
            with open(path, "rb") as fh:
                obj = self.app.storage.put(key, fh)
        except OSError as exc:
            raise ConversionError("conversion_failed", f"storing {name} failed: {exc}", Stage.WRITE) from None
        return Derivative(role, fmt, mime, key, obj.size, obj.sha256, "ok", messages)

    def _publish(self, conv: Converter, out: ConvertOutput, warnings: list[str], fmt: str) -> dict[str, Any]:
        t0 = time.monotonic()
        manifest: list[Derivative] = []
        stage_errors = list(out.stage_errors)
        geometry_key = preview_key = None
        if out.geometry is not None and out.geometry.is_file():
            gfmt = out.geometry.suffix.lstrip(".").lower() or "glb"
            d = self._put(f"model.{gfmt}", out.geometry, "geometry", gfmt, FORMATS[gfmt].mime if gfmt in FORMATS
                          else "application/octet-stream")
            manifest.append(d)
            geometry_key = d.path
        elif conv.produces_geometry:
            manifest.append(Derivative("geometry", "glb", "model/gltf-binary", None, 0, None, "failed",
                                       tuple(e["message"] for e in stage_errors if e["stage"] in ("mesh", "write"))))
        else:
            manifest.append(Derivative("geometry", "glb", "model/gltf-binary", None, 0, None, "skipped",
                                       ("a 2D drawing has no 3D geometry",)))
        if out.preview is not None and out.preview.is_file():
            d = self._put("preview.png", out.preview, "preview", "png", "image/png")
            manifest.append(d)
            preview_key = d.path
        else:
            manifest.append(Derivative("preview", "png", "image/png", None, 0, None, "failed",
                                       tuple(e["message"] for e in stage_errors if e["stage"] == "render")))
        all_warnings = [*warnings, *out.warnings]
        # what the job itself knows wins over what the converter (a box, so untrusted) reported
        own = ("format", "converter", "source", "attributes", "warnings", "stage_errors")
        meta = {"format": fmt, "converter": {"id": conv.id, "version": conv.version},
                "source": {"filename": self.rec.filename, "size": self.rec.size, "sha256": self.rec.sha256},
                **{k: v for k, v in out.metadata.items() if k not in own}, "attributes": out.attributes,
                "warnings": all_warnings, "stage_errors": stage_errors}
        with scratch_dir() as mdir:
            meta_path = Path(mdir) / "metadata.json"
            meta_path.write_text(json.dumps(meta, indent=2, default=str))
            manifest.append(self._put("metadata.json", meta_path, "metadata", "json", "application/json"))
        self.timings["publish_s"] = time.monotonic() - t0
        missing = (conv.produces_geometry and geometry_key is None) or preview_key is None
        status = ConversionStatus.PARTIAL if (stage_errors or missing) else ConversionStatus.DONE
        error = None
        if status is ConversionStatus.PARTIAL:
            first = stage_errors[0] if stage_errors else {"stage": "render", "code": "conversion_failed",
                                                          "message": "a derivative is missing"}
            error = {"code": first["code"], "message": first["message"], "converter": conv.id,
                     "stage": first["stage"]}
        attributes = {**(self.rec.attributes or {}), **out.attributes}
        for k in ("units", "bbox", "parts", "faces", "solids", "volume", "layers", "entities", "extents"):
            if k in out.metadata:
                attributes[k] = out.metadata[k]
        self._mark({"conversion_status": status.value, "preview_path": preview_key, "geometry_path": geometry_key,
                    "conversion_error": error, "attributes": json.loads(json.dumps(attributes, default=str)),
                    "cad_format": fmt or self.rec.cad_format})
        return {"file_id": self.rec.id, "status": status.value, "converter": conv.id,
                "converter_version": conv.version, "format": fmt, "manifest": [d.as_dict() for d in manifest],
                "warnings": all_warnings, "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "isolation": self.isolation}

    def _stopped(self, stop: Cancelled) -> None:
        """The attempt was cancelled, timed out or lost its lease: never leave the file ``processing``."""
        error = {"code": stop.code, "message": stop.message, "converter": self.converter_id, "stage": "read"}
        _, attempts, max_attempts = update_for_attempt(self.app.engine, self.rec.id, self.ctx.job_id,
                                                       self.ctx.attempt_id, {}, ("running", "cancelled"))
        retries = stop.code in ("timeout", "lease_lost") and attempts < max_attempts
        status = ConversionStatus.PENDING if retries else ConversionStatus.FAILED
        update_for_attempt(self.app.engine, self.rec.id, self.ctx.job_id, self.ctx.attempt_id,
                           {"conversion_status": status.value, "conversion_error": error}, ("running", "cancelled"))

    def _fail(self, err: ConversionError) -> None:
        error: dict[str, Any] = {"code": err.code, "message": err.message, "converter": self.converter_id,
                                 "stage": err.stage.value}
        if self.captured.strip():
            error["output"] = self.captured[-OUTPUT_EXCERPT:]
        if self.isolation is not None:
            error["isolation"] = self.isolation["mode"]
        status = ConversionStatus.UNSUPPORTED if err.code == "unsupported_format" else ConversionStatus.FAILED
        _, attempts, max_attempts = update_for_attempt(self.app.engine, self.rec.id, self.ctx.job_id,
                                                       self.ctx.attempt_id, {})
        if err.retryable and attempts < max_attempts:
            status = ConversionStatus.PENDING  # another attempt follows
        self._mark({"conversion_status": status.value, "conversion_error": error})
        raise JobError(err.code, err.message, retryable=err.retryable, details=error)
