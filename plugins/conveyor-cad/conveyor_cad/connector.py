"""The ``connector`` converter: an external HTTP CAD connector service does the conversion.

Protocol: ``POST {base}/api/v1/convert`` (multipart: ``mode``, ``format``, ``filename`` and
either ``file`` or a presigned ``file_url``; bearer token; tenant headers) answers
``{ok, artifacts: {geometry: {glb_url|gltf_url|obj_url, bin_url, bbox}, preview: {png_url},
attributes}, error, code}``. Artifacts are fetched and stored as ours; the geometry is
loaded back in an isolated child (faces counted, preview rendered if none came).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

from conveyor_cad.converter import Converter, ConvertOptions
from conveyor_cad.isolation import Limits, run_converter
from conveyor_cad.mesh import MeshConverter
from conveyor_cad.records import ConversionError, ConvertOutput, Stage
from conveyor_cad.routing import CadConfig

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
EXCERPT = 500


def _multipart(fields: dict[str, str], file_field: tuple[str, str, Path] | None) -> tuple[bytes, str]:
    boundary = f"conveyor-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if file_field is not None:
        name, filename, path = file_field
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ConnectorConverter(Converter):
    """Any format the routing sends it, converted by the configured HTTP connector service."""

    id: ClassVar[str] = "connector"
    version: ClassVar[str] = "1.0"
    formats: ClassVar[tuple[str, ...]] = ()
    isolated: ClassVar[bool] = False
    description: ClassVar[str] = "external HTTP connector (CONVEYOR_CAD_CONNECTOR_URL, per-format routing)"

    def accepts(self, fmt: str) -> bool:
        """Only through routing: never chosen as a format's local converter."""
        return False

    def _request(self, cfg: CadConfig, source: Path, options: ConvertOptions) -> tuple[int, bytes]:
        assert cfg.connector_url
        fields = {"mode": "all", "format": options.format, "filename": options.filename}
        file_field: tuple[str, str, Path] | None = ("file", options.filename, source)
        if cfg.connector_upload in ("auto", "url"):
            if options.source_signed_url:
                fields["file_url"] = options.source_signed_url
                file_field = None
            elif cfg.connector_upload == "url":
                raise ConversionError("connector_failed", "CONVEYOR_CAD_CONNECTOR_UPLOAD=url but storage cannot "
                                      "presign an http(s) URL for the input; use auto or file", Stage.FETCH)
        body, ctype = _multipart(fields, file_field)
        headers = {"Content-Type": ctype, "Accept": "application/json", "X-Conveyor-Tenant": options.tenant}
        if options.org:
            headers["X-Conveyor-Org"] = options.org
        if cfg.connector_token:
            headers["Authorization"] = f"Bearer {cfg.connector_token}"
        url = cfg.connector_url.rstrip("/") + "/api/v1/convert"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=cfg.connector_timeout_s) as resp:
                return resp.status, resp.read(8 * 1024 * 1024)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(8 * 1024 * 1024)
        except TimeoutError:
            raise ConversionError("connector_failed", f"connector {url} did not answer within "
                                  f"{cfg.connector_timeout_s:g}s", Stage.READ, retryable=True) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConversionError("connector_failed", f"connector {url} unreachable: {reason}", Stage.READ,
                                  retryable=True) from None

    def _fetch(self, cfg: CadConfig, url: str, dest: Path) -> Path:
        assert cfg.connector_url
        full = urljoin(cfg.connector_url.rstrip("/") + "/", url)
        if urlsplit(full).scheme not in ("http", "https"):
            raise ConversionError("connector_failed", f"connector artifact URL {url!r} is not http(s)", Stage.FETCH)
        headers = {"Authorization": f"Bearer {cfg.connector_token}"} if cfg.connector_token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(full, headers=headers),
                                        timeout=cfg.connector_timeout_s) as resp:
                data = resp.read(MAX_ARTIFACT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise ConversionError("connector_failed", f"fetching artifact {full} gave HTTP {exc.code}",
                                  Stage.FETCH, retryable=exc.code >= 500) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConversionError("connector_failed", f"fetching artifact {full} failed: "
                                  f"{getattr(exc, 'reason', exc)}", Stage.FETCH, retryable=True) from None
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ConversionError("connector_failed", f"artifact {full} is larger than {MAX_ARTIFACT_BYTES} bytes",
                                  Stage.FETCH)
        dest.write_bytes(data)
        return dest

    def convert(self, source: Path, out_dir: Path, options: ConvertOptions) -> ConvertOutput:
        """Ask the connector, fetch what it made, and validate the geometry in a child."""
        cfg = CadConfig.load()
        if not cfg.connector_url:
            raise ConversionError("connector_failed", "no connector configured: set CONVEYOR_CAD_CONNECTOR_URL",
                                  Stage.READ)
        status, body = self._request(cfg, source, options)
        excerpt = body[:EXCERPT].decode("utf-8", "replace")
        if status >= 500:
            raise ConversionError("connector_failed", f"connector answered HTTP {status}: {excerpt}", Stage.READ,
                                  retryable=True)
        try:
            reply: Any = json.loads(body)
        except ValueError:
            reply = None
        if status >= 400 or not isinstance(reply, dict) or reply.get("ok") is not True:
            code = reply.get("code") if isinstance(reply, dict) else None
            error = reply.get("error") if isinstance(reply, dict) else None
            raise ConversionError("connector_failed", f"connector refused the file (HTTP {status}"
                                  f"{', code ' + str(code) if code else ''}): {error or excerpt}", Stage.READ)
        artifacts = reply.get("artifacts") or {}
        geometry = artifacts.get("geometry") or {}
        preview = artifacts.get("preview") or {}
        warnings: list[str] = []
        fetched = out_dir / "fetched"
        fetched.mkdir(parents=True, exist_ok=True)
        geom_path: Path | None = None
        geom_fmt = None
        for key, fmt in (("glb_url", "glb"), ("gltf_url", "gltf"), ("obj_url", "obj")):
            if geometry.get(key):
                geom_fmt = fmt
                geom_path = self._fetch(cfg, geometry[key], fetched / f"model.{fmt}")
                break
        companions: list[Path] = []
        if geom_path is not None and geometry.get("bin_url"):
            name = PurePosixPath(urlsplit(geometry["bin_url"]).path).name
            name = name if name not in ("", ".", "..") else "model.bin"
            companions.append(self._fetch(cfg, geometry["bin_url"], fetched / name))
        png: Path | None = None
        if preview.get("png_url"):
            png = self._fetch(cfg, preview["png_url"], fetched / "connector-preview.png")
            if not png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"):
                warnings.append("connector preview is not a PNG; rendered one locally instead")
                png = None
        if geom_path is None:
            if png is None:
                raise ConversionError("connector_failed", "connector answered ok but sent no geometry and no "
                                      "preview", Stage.FETCH)
            return ConvertOutput(None, png, {"connector": cfg.connector_url}, dict(reply.get("attributes") or {}),
                                 tuple(warnings), ({"stage": "mesh", "code": "connector_failed",
                                                    "message": "connector sent no geometry"},))
        assert geom_fmt is not None
        check = run_converter(MeshConverter(), geom_path, out_dir / "validate",
                              ConvertOptions(format=geom_fmt, filename=geom_path.name,
                                             preview_size=options.preview_size),
                              Limits(cfg.time_limit_s, cfg.memory_mb, cfg.output_mb), cfg=cfg, companions=companions)
        if check.error is not None:
            err = check.error
            raise ConversionError(err.code, f"connector geometry: {err.message}", err.stage)
        assert check.output is not None
        out = check.output
        meta = {**out.metadata, "format": options.format, "connector": {"url": cfg.connector_url,
                                                                         "bbox": geometry.get("bbox")}}
        attributes = {**out.attributes, **(artifacts.get("attributes") or {}), **(reply.get("attributes") or {})}
        return ConvertOutput(out.geometry, png or out.preview, meta, attributes, (*warnings, *out.warnings),
                             out.stage_errors)

