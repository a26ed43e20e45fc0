"""Storage of inputs and artifacts: a small facade over any fsspec URL."""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import fsspec

from conveyor.errors import ConfigError

#: protocol → extra that brings its fsspec implementation
_EXTRAS = {"s3": "s3", "s3a": "s3", "gcs": "gcs", "gs": "gcs", "az": "azure", "abfs": "azure"}


@dataclass(frozen=True)
class StoredObject:
    """What ``put`` wrote."""

    key: str
    url: str
    size: int
    sha256: str


class Storage:
    """Keys under one base URL (``file://./data``, ``memory://x``, ``s3://bucket/prefix``)."""

    def __init__(self, base_url: str, **options: Any) -> None:
        protocol = base_url.split("://", 1)[0] if "://" in base_url else "file"
        if protocol in ("s3", "s3a"):
            base_url, options = s3_options(base_url, options)
        self.base_url = base_url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.base_url, **options)
        except ImportError as exc:
            extra = _EXTRAS.get(protocol, protocol)
            raise ConfigError(f"storage {base_url!r} needs {exc.name or 'a driver'}: "
                              f"pip install 'conveyor-jobs[{extra}]'") from None
        except ValueError as exc:
            raise ConfigError(f"CONVEYOR_STORAGE_URL {base_url!r}: {exc}") from None
        self.protocol = protocol
        self.root = root.rstrip("/")
        if protocol == "file":
            self.fs.makedirs(self.root, exist_ok=True)

    @staticmethod
    def _clean(key: str) -> str:
        norm = posixpath.normpath("/" + key.lstrip("/"))[1:]
        if not norm or norm.startswith("..") or norm != key.strip("/"):
            raise ValueError(f"storage key {key!r} is not a plain relative path")
        return norm

    def path(self, key: str) -> str:
        """Backend path of a key."""
        return f"{self.root}/{self._clean(key)}"

    def url(self, key: str) -> str:
        """Full URL of a key that ``fsspec.open`` reads."""
        return self.fs.unstrip_protocol(self.path(key))

    def put(self, key: str, data: bytes | IO[bytes]) -> StoredObject:
        """Write bytes (or a binary stream) under a key; returns size and sha256."""
        p = self.path(key)
        parent = posixpath.dirname(p)
        if parent and self.protocol not in ("s3", "s3a"):  # object stores have no directories
            self.fs.makedirs(parent, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with self.fs.open(p, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                digest.update(data)
                out.write(data)
                size = len(data)
            else:
                for chunk in iter(lambda: data.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        return StoredObject(key, self.url(key), size, digest.hexdigest())

    def get(self, key: str) -> bytes:
        """Read a whole object."""
        with self.fs.open(self.path(key), "rb") as f:
            return f.read()  # type: ignore[no-any-return]

    def open(self, key: str, mode: str = "rb") -> Any:
        """Open an object as a file."""
        return self.fs.open(self.path(key), mode)

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        return bool(self.fs.exists(self.path(key)))

    def delete(self, key: str, recursive: bool = False) -> None:
        """Remove an object (or a prefix with ``recursive``); absent is fine."""
        p = self.path(key)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=recursive)

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under a prefix."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return iter(())
        root = self.root + "/"
        return iter(sorted(p[len(root):] if p.startswith(root) else p for p in self.fs.find(base)))

    def signed_url(self, key: str, expires_s: int = 3600) -> str:
        """A time-limited download URL where the backend can sign, else the plain URL."""
        try:
            return str(self.fs.sign(self.path(key), expiration=expires_s))
        except NotImplementedError:
            return self.url(key)


def s3_options(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split ``s3://[key:secret@]bucket/prefix?endpoint_url=…&region=…`` into a plain URL and s3fs options.

    Explicit ``options`` win, then the URL, then the standard AWS variables
    (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, ``AWS_REGION``; keys and session
    tokens are read by botocore itself).
    """
    parts = urlsplit(url)
    opts: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if parts.username:
        opts["key"] = unquote(parts.username)
        opts["secret"] = unquote(parts.password or "")
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - {"endpoint_url", "region", "anon"})
    if unknown:
        raise ConfigError(f"CONVEYOR_STORAGE_URL: unknown S3 option(s) {', '.join(unknown)}; "
                          "use endpoint_url, region or anon")
    endpoint = query.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client["region_name"] = region
    if query.get("anon", "").lower() in ("1", "true", "yes"):
        opts["anon"] = True
    if client:
        opts["client_kwargs"] = client
    # presigned URLs with Signature V4, which every AWS region and S3-compatible server accepts
    opts["config_kwargs"] = {"signature_version": "s3v4"}
    # workers on many hosts write the same prefixes: a cached listing would hide their objects
    opts["use_listings_cache"] = False
    if not parts.hostname:
        raise ConfigError(f"CONVEYOR_STORAGE_URL {parts.scheme}://…: no bucket; use s3://bucket/prefix")
    plain = f"{parts.scheme}://{parts.hostname}{parts.path}"
    return plain, {**opts, **options}


def artifact_key(job_id: str, attempt_id: int, name: str) -> str:
    """Key of an artifact: ``jobs/{job_id}/{attempt_id}/{name}``, so attempts never collide."""
    return f"jobs/{job_id}/{attempt_id}/{name}"
