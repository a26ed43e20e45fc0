"""Settings: environment variables win, then the TOML file, then defaults."""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError
from conveyor.limits import DEFAULT_MAX_PAYLOAD_BYTES

ENV_PREFIX = "CONVEYOR_"
DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
#: settings printed as ``***`` by ``conveyor config`` when set
SECRETS = frozenset({"jwt_secret", "metrics_token"})


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Effective configuration of one process."""

    db_url: str = "sqlite:///conveyor.db"
    queue_url: str = "sql"
    storage_url: str = "file://./conveyor-data"
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 0.0  # 0 → lease / 3
    reclaim_grace_seconds: float = 15.0
    stream_key: str = "conveyor:jobs"
    stream_group: str = "conveyor:workers"
    stream_maxlen: int = 200_000
    consumer: str = ""
    concurrency: int = 4
    max_attempts: int = 3
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    dispatch_batch: int = 500
    dispatch_backoff_max_seconds: float = 30.0
    repair_interval_seconds: float = 10.0
    gc_retention_days: float = 30.0
    idempotency_ttl_seconds: float = 86400.0
    metrics_port: int = 0  # 0 → no /metrics endpoint
    plugins: str = ""
    pressure_max_length: int = 0  # 0 → never refuse submits
    pressure_max_age_seconds: float = 0.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # ---- the HTTP API (`conveyor api`)
    jwt_secret: str = field(default="", repr=False)  # HS256 key; secret
    jwt_public_key: str = ""  # PEM file (or PEM text) of the RS256/ES256 verifying key
    jwt_jwks_file: str = ""  # JWKS file of verifying keys, chosen by the token's kid
    jwt_audience: str = ""
    jwt_issuer: str = ""
    metrics_token: str = field(default="", repr=False)  # bearer that may read /metrics remotely; secret
    tenant_max_active_jobs: int = 0  # 0 → no per-tenant quota
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    sse_heartbeat_seconds: float = 15.0
    sse_poll_seconds: float = 0.5
    # ---- tenancy (see conveyor.tenancy)
    tenancy: str = "single"  # single | db-per-tenant | db-per-tenant-org
    db_url_template: str = ""  # the URL of a tenant's database: {tenant} (and {org}) filled in
    tenant_cache_size: int = 64  # tenant databases a process keeps engines for (least recently used go)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between lease renewals (explicit, else a third of the lease)."""
        return self.heartbeat_seconds if self.heartbeat_seconds > 0 else self.lease_seconds / 3.0

    @property
    def consumer_name(self) -> str:
        """This process's consumer name (``hostname-pid`` unless set)."""
        return self.consumer or _default_consumer()

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (marked as set in code)."""
        src = dict(self.sources)
        src.update({k: "code" for k in changes})
        return replace(self, sources=src, **changes)

    def masked(self) -> dict[str, tuple[Any, str]]:
        """Every value with its source, secrets in URLs masked."""
        out: dict[str, tuple[Any, str]] = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if f.name in SECRETS and value:
                value = "***"
            elif isinstance(value, str) and "://" in value:
                value = mask_url(value)
            out[f.name] = (value, self.sources.get(f.name, "default"))
        return out


def mask_url(url: str) -> str:
    """Replace the password of a URL with ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _pw = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def _coerce(name: str, raw: Any, kind: type, origin: str) -> Any:
    try:
        if kind is bool:
            return str(raw).lower() in ("1", "true", "yes", "on")
        if kind is int and isinstance(raw, (bool, float)):
            raise ValueError("a whole number is expected")  # int() would truncate 1.5 or take true as 1
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{origin}: {name} must be {kind.__name__}, got {raw!r}; fix the value or unset it"
        ) from None


def load_settings(env: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings: ``CONVEYOR_*`` variables, then the TOML file, then defaults."""
    env = os.environ if env is None else env
    cfg_path = Path(path or env.get("CONVEYOR_CONFIG") or "conveyor.toml")
    file_values: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            data = tomllib.loads(cfg_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML ({exc}); fix the file or unset CONVEYOR_CONFIG") from None
        file_values = dict(data.get("conveyor", data))
    elif path or env.get("CONVEYOR_CONFIG"):
        raise ConfigError(f"config file {cfg_path} does not exist; create it or unset CONVEYOR_CONFIG")
    known = {f.name: f for f in fields(Settings) if f.name != "sources"}
    unknown = sorted(set(file_values) - set(known))
    if unknown:
        raise ConfigError(f"{cfg_path}: unknown setting(s) {', '.join(unknown)}; see `conveyor config`")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in known:
        kind = type(getattr(Settings, name)) if hasattr(Settings, name) else str
        env_name = ENV_PREFIX + name.upper()
        aliases = {"stream_key": "CONVEYOR_STREAM_KEY", "stream_group": "CONVEYOR_STREAM_GROUP",
                   "stream_maxlen": "CONVEYOR_STREAM_MAXLEN"}
        env_name = aliases.get(name, env_name)
        if env_name in env and env[env_name] != "":
            values[name] = _coerce(name, env[env_name], kind, f"environment {env_name}")
            sources[name] = f"env {env_name}"
        elif name in file_values:
            values[name] = _coerce(name, file_values[name], kind, str(cfg_path))
            sources[name] = f"file {cfg_path}"
    settings = Settings(**values, sources=sources)
    from conveyor.queue import BACKENDS
    scheme = settings.queue_url.split("://", 1)[0] if "://" in settings.queue_url else settings.queue_url
    if scheme not in BACKENDS:
        raise ConfigError(f"CONVEYOR_QUEUE_URL {settings.queue_url!r}: unknown queue scheme {scheme!r}; "
                          f"use one of: {', '.join(sorted(BACKENDS))}")
    if settings.lease_seconds <= 0:
        raise ConfigError("lease_seconds must be > 0")
    if settings.heartbeat_interval >= settings.lease_seconds:
        raise ConfigError("heartbeat_seconds must be shorter than lease_seconds, or the lease lapses between beats")
    if settings.max_payload_bytes <= 0:
        raise ConfigError(f"{sources.get('max_payload_bytes', 'code')}: max_payload_bytes must be > 0 (the bytes of "
                          f"JSON a payload may have), got {settings.max_payload_bytes}; fix the value or unset it "
                          f"for {DEFAULT_MAX_PAYLOAD_BYTES}")
    for name in ("tenant_max_active_jobs",):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{sources.get(name, 'code')}: {name} must be >= 0 (0: no limit), "
                              f"got {getattr(settings, name)}")
    for name in ("max_upload_bytes", "sse_heartbeat_seconds", "sse_poll_seconds", "tenant_cache_size"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{sources.get(name, 'code')}: {name} must be > 0, got {getattr(settings, name)}")
    from conveyor.tenancy import check_settings
    check_settings(settings)
    return settings


#: variables read outside ``Settings`` by the core, and the families tests and benchmarks use
CORE_ENVIRONMENT = ("CONVEYOR_CONFIG", "CONVEYOR_STRICT_CONFIG", "CONVEYOR_LOG_LEVEL", "CONVEYOR_LOG_FORMAT",
                    "CONVEYOR_TEST_*", "CONVEYOR_BENCH_*")


def setting_variables() -> list[str]:
    """The environment variable of every setting."""
    aliases = {"stream_key": "CONVEYOR_STREAM_KEY", "stream_group": "CONVEYOR_STREAM_GROUP",
               "stream_maxlen": "CONVEYOR_STREAM_MAXLEN"}
    return [aliases.get(f.name, ENV_PREFIX + f.name.upper()) for f in fields(Settings) if f.name != "sources"]


def unknown_environment(env: Mapping[str, str], known: Iterable[str] = ()) -> list[str]:
    """One message per ``CONVEYOR_*`` variable in ``env`` that no setting, ``known`` name or family reads,
    naming the closest known variable when one is close."""
    import difflib
    names = {*setting_variables(), *CORE_ENVIRONMENT, *known}
    exact = sorted(n for n in names if not n.endswith("*"))
    families = tuple(n[:-1] for n in names if n.endswith("*"))
    out = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in names or (families and var.startswith(families)):
            continue
        close = difflib.get_close_matches(var, exact, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; `conveyor config` lists the settings"
        out.append(f"{var} is not a Conveyor setting and no loaded plugin reads it{hint}")
    return out


def strict_config(env: Mapping[str, str]) -> bool:
    """Whether unknown ``CONVEYOR_*`` variables are errors (``CONVEYOR_STRICT_CONFIG=1``)."""
    return env.get("CONVEYOR_STRICT_CONFIG", "").strip().lower() in ("1", "true", "yes", "on")
