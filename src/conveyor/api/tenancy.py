"""Tenancy of a request: which tenant and org it acts in, and which database holds them.

``scope_for`` turns an identity and the ``x-tenant-id`` / ``x-org-id`` headers into the
``Scope`` every query of a request is narrowed to (every row carries its tenant and org,
in every mode). ``resolve_app`` picks the ``Conveyor`` of the scope's database: the one
the API serves in ``single`` mode, else the registered tenant database's
(``conveyor.tenancy``). A tenant without a registered database is 403; no request ever
creates a database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.api.auth import Identity
from conveyor.api.errors import ApiError
from conveyor.errors import InvalidJob
from conveyor.limits import TEXT_LIMITS, check_text
from conveyor.store import Scope
from conveyor.tenancy import InvalidTenant, UnknownTenant

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
    """The ``Conveyor`` that holds this scope's jobs.

    ``single``: ``default``. ``db-per-tenant``: the scope's tenant's database, so a scope
    spanning every tenant (a ``*`` admin without ``x-tenant-id``) is 422. ``db-per-tenant-org``:
    the tenant's org's database, so a scope spanning every org of a tenant (a token without
    ``org`` and no ``x-org-id``) is 422 too. A name that is no tenant name, and a tenant (or
    org) without a registered database, are 403 ``forbidden``, before any database is touched
    but the control one's registry.
    """
    tenancy = default.tenancy
    if tenancy is None:
        return default
    if scope.tenant is None:
        raise ApiError(422, "invalid_request", "each tenant has its own database here: choose the tenant with the "
                                               "x-tenant-id header", {"header": "x-tenant-id"})
    if tenancy.per_org and scope.org is None:
        raise ApiError(422, "invalid_request", "each org has its own database here: choose the org with the "
                                               "x-org-id header (or use a token naming one)", {"header": "x-org-id"})
    try:
        return tenancy.app_for(tenancy.key(scope.tenant, scope.org))
    except InvalidTenant as exc:
        raise _forbidden(f"not a tenant this deployment serves: {exc}") from None
    except UnknownTenant:
        where = f"tenant {scope.tenant!r}" + (f" org {scope.org!r}" if tenancy.per_org else "")
        raise _forbidden(f"{where} has no database in this deployment") from None
