"""Tenancy, first step: one database, every row tagged with its tenant and org.

``scope_for`` turns an identity and the ``x-tenant-id`` / ``x-org-id`` headers into the
``Scope`` every query of a request is narrowed to. ``resolve_app`` is the seam for
database-per-tenant deployments: today it returns the one ``Conveyor`` the API serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.api.auth import Identity
from conveyor.api.errors import ApiError
from conveyor.errors import InvalidJob
from conveyor.limits import TEXT_LIMITS, check_text
from conveyor.store import Scope

if TYPE_CHECKING:
    from conveyor.app import Conveyor


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def _header_value(name: str, value: str, limit: int) -> str:
    try:
        check_text(name, value, limit)
    except InvalidJob as exc:
        raise ApiError(422, "invalid_request", exc.message, {"header": name}) from None
    return value


def scope_for(identity: Identity, tenant_header: str | None, org_header: str | None) -> Scope:
    """The tenant and org a request may see and write in.

    - No header: the token's own ``tenant`` (every tenant for an admin with ``tenant: "*"``)
      and its ``org`` (every org of the tenant when the token has none).
    - ``x-tenant-id``: the token's tenant or one of its ``tenants``; any for ``*`` admins.
    - ``x-org-id``: any org when the token has no ``org``, else its org or one of its ``orgs``.
    A header outside what the token allows is 403 ``forbidden``.
    """
    tenant: str | None = None if identity.all_tenants else identity.tenant
    if tenant_header:
        t = _header_value("x-tenant-id", tenant_header, TEXT_LIMITS["tenant"])
        if not (identity.all_tenants or t == identity.tenant or t in identity.tenants):
            raise _forbidden(f"this token may not act in tenant {t!r}")
        tenant = t
    org = identity.org
    if org_header:
        o = _header_value("x-org-id", org_header, TEXT_LIMITS["org"])
        if not (identity.org is None or o == identity.org or o in identity.orgs):
            raise _forbidden(f"this token may not act in org {o!r}")
        org = o
    return Scope(tenant, org)


def write_tenant(scope: Scope) -> str:
    """The tenant new jobs are created in; an all-tenants admin must choose one with ``x-tenant-id``."""
    if scope.tenant is None:
        raise ApiError(422, "invalid_request", "this token reads every tenant; choose the tenant to write in "
                                               "with the x-tenant-id header", {"header": "x-tenant-id"})
    return scope.tenant


def resolve_app(default: Conveyor, identity: Identity, scope: Scope) -> Conveyor:
    """The deployment that holds this scope's jobs: ``default`` while tenancy is a single database.

    A database-per-tenant mode replaces this with a lookup (a URL template per tenant,
    and one cached ``Conveyor`` per tenant database).
    """
    return default
