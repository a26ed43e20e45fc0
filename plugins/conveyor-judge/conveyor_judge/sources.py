"""Where a submission's stored source may come from: only objects of the submitting job's tenant."""

from __future__ import annotations

import os
import posixpath
from typing import Any
from urllib.parse import quote

from conveyor.plugin_api import Storage
from conveyor_judge.errors import JudgeError

#: the judge's own namespace of stored sources: ``submissions/{tenant}/…``
PREFIX = "submissions"
KEY_MAX_CHARS = 1024


def tenant_prefix(tenant: str) -> str:
    """The storage prefix of a tenant's sources (the tenant id percent-encoded, so it is one component)."""
    part = quote(tenant, safe="")
    if part in ("", ".", ".."):
        part = part.replace(".", "%2E") or "%00"
    return f"{PREFIX}/{part}/"


def source_key(tenant: str, name: str) -> str:
    """The key to store a tenant's submission source under (``submissions/{tenant}/{name}``)."""
    clean = posixpath.normpath("/" + name).lstrip("/")
    if not clean or clean.startswith(".."):
        raise ValueError(f"{name!r} is not a plain relative name")
    return tenant_prefix(tenant) + clean


def store_source(storage: Storage, tenant: str, name: str, data: bytes) -> str:
    """Store a submission's source under the tenant's prefix (``0600`` on local disk); returns its key."""
    key = source_key(tenant, name)
    storage.put(key, data)
    if storage.protocol == "file":
        os.chmod(storage.path(key), 0o600)
    return key


def _not_found(key: str, tenant: str) -> JudgeError:
    # the same words whether the object is absent or another tenant's: nothing tells them apart
    return JudgeError("source_not_found", f"no source {key[:200]!r} in tenant {tenant!r}; store it under "
                                          f"{tenant_prefix(tenant)!r} (conveyor_judge.sources.source_key) or as "
                                          "a file of this tenant")


def _plain(key: str) -> bool:
    """A normalised relative key: no '..', no empty or '.' component, no leading slash."""
    if not key or len(key) > KEY_MAX_CHARS or "\0" in key or "\\" in key or key.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def _tenant_file(app: Any, storage: Storage, key: str, tenant: str) -> bool:
    """Whether a plugin records the object at ``key`` as ``tenant``'s (the CAD plugin's ``conveyor_files``)."""
    if app is None:
        return False
    owner = app.plugins.first_result("conveyor_object_tenant", app=app, url=storage.url(key))
    return bool(owner == tenant)


def owned_key(storage: Storage, key: str, tenant: str, app: Any = None) -> str:
    """``key`` if it names an object of ``tenant``; else ``source_not_found`` whether it exists or not.

    A tenant owns the keys under its prefix ``submissions/{tenant}/`` and the objects of its
    ``conveyor_files`` rows; problem packages, other tenants' files and job artifacts are never sources.
    """
    if not isinstance(key, str) or not _plain(key):
        raise _not_found(str(key), tenant)
    owned = key.startswith(tenant_prefix(tenant)) or _tenant_file(app, storage, key, tenant)
    if not owned or not storage.exists(key):
        raise _not_found(key, tenant)
    return key
