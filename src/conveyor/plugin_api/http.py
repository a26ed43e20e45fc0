"""What a plugin's HTTP routes may use of ``conveyor api`` (imports FastAPI: import it inside ``conveyor_api_routes``).

Dependencies for route signatures (``AppDep``, ``ScopeDep``, ``IdentityDep``, ``AdminDep``),
the one error shape (``ApiError``, ``not_found``, ``error_response``) and its models.
"""

from __future__ import annotations

from conveyor.api.auth import Identity
from conveyor.api.deps import AdminDep, AppDep, IdentityDep, ScopeDep, api_state, current_app, current_scope
from conveyor.api.errors import UNAVAILABLE_RETRY_AFTER_S, ApiError, error_response, not_found, retry_after
from conveyor.api.jobs import visible_job
from conveyor.api.schemas import ErrorInfo, ErrorOut
from conveyor.api.tenancy import write_tenant
from conveyor.api.views import SYSTEM_CODES

__all__ = [
    "SYSTEM_CODES",
    "UNAVAILABLE_RETRY_AFTER_S",
    "AdminDep",
    "ApiError",
    "AppDep",
    "ErrorInfo",
    "ErrorOut",
    "Identity",
    "IdentityDep",
    "ScopeDep",
    "api_state",
    "current_app",
    "current_scope",
    "error_response",
    "not_found",
    "retry_after",
    "visible_job",
    "write_tenant",
]
