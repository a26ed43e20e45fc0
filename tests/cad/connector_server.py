"""A small real HTTP CAD connector for tests, served on loopback.

It speaks the connector protocol (``POST /api/v1/convert``, multipart in, JSON out,
artifacts fetched by URL) and converts meshes with trimesh. ``behaviours`` is a queue
of what the next requests do: ``ok``, ``gltf``, ``empty``, ``refuse``, ``error500``,
``hang``; when it is empty every request is ``ok``.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "s3cret-connector-token"


def _parse_multipart(ctype: str, body: bytes) -> dict[str, Any]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    fields: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[name] = payload if part.get_filename() else payload.decode()
    return fields


def _png(size: int = 64) -> bytes:
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(im).rectangle((8, 8, size - 8, size - 8), fill=(200, 60, 40))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class ConnectorServer:
    """Start with ``with ConnectorServer() as c: c.url``."""

    def __init__(self) -> None:
        self.behaviours: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.artifacts: dict[str, tuple[bytes, str]] = {}
        self.hang_seconds = 5.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                art = server.artifacts.get(self.path)
                if art is None:
                    self._send(404, b'{"error": "no such artifact"}')
                else:
                    self._send(200, art[0], art[1])

            def do_POST(self) -> None:
                if self.path != "/api/v1/convert":
                    self._send(404, b'{"ok": false, "error": "unknown endpoint"}')
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fields = _parse_multipart(self.headers["Content-Type"], body)
                server.requests.append({"headers": dict(self.headers), "fields": fields})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, b'{"ok": false, "error": "bad token", "code": "unauthorized"}')
                    return
                what = server.behaviours.pop(0) if server.behaviours else "ok"
                if what == "hang":
                    time.sleep(server.hang_seconds)
                    self._send(504, b"late")
                elif what == "error500":
                    self._send(503, b"<html>upstream converter pool exhausted</html>", "text/html")
                elif what == "refuse":
                    self._send(200, json.dumps({"ok": False, "error": "license server refused the part",
                                                "code": "LICENSE"}).encode())
                else:
                    self._send(200, json.dumps(server.convert(fields, what)).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def convert(self, fields: dict[str, Any], what: str) -> dict[str, Any]:
        import trimesh
        job = uuid.uuid4().hex[:8]
        if what == "empty":
            mesh = trimesh.Trimesh()
        else:
            if "file_url" in fields:
                import urllib.request
                with urllib.request.urlopen(fields["file_url"], timeout=10) as resp:
                    data = resp.read()
            else:
                data = fields["file"]
            mesh = trimesh.load(io.BytesIO(data), file_type=fields["format"], force="mesh")
        base = f"/artifacts/{job}"
        geometry: dict[str, Any] = {"bbox": mesh.bounds.tolist() if len(mesh.faces) else None}
        if what == "gltf":
            from trimesh.exchange.gltf import export_gltf
            files = export_gltf(trimesh.Scene(mesh), merge_buffers=True)
            for name, data in files.items():
                self.artifacts[f"{base}/{name}"] = (data, "application/octet-stream")
            geometry["gltf_url"] = f"{base}/model.gltf"
            geometry["bin_url"] = f"{self.url}{base}/gltf_buffer.bin"
        else:
            self.artifacts[f"{base}/model.glb"] = (trimesh.Scene(mesh).export(file_type="glb"),
                                                   "model/gltf-binary")
            geometry["glb_url"] = f"{base}/model.glb"
        self.artifacts[f"{base}/preview.png"] = (_png(), "image/png")
        return {"ok": True, "artifacts": {"geometry": geometry, "preview": {"png_url": f"{base}/preview.png"},
                                          "attributes": {"connector_part": fields.get("filename")}}}

    def __enter__(self) -> ConnectorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
