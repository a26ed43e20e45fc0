"""Storage of inputs and artifacts: a small facade over any fsspec URL."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

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
        self.base_url = base_url.rstrip("/")
        protocol = base_url.split("://", 1)[0] if "://" in base_url else "file"
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
        if parent:
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


def artifact_key(job_id: str, attempt_id: int, name: str) -> str:
    """Key of an artifact: ``jobs/{job_id}/{attempt_id}/{name}``, so attempts never collide."""
    return f"jobs/{job_id}/{attempt_id}/{name}"
