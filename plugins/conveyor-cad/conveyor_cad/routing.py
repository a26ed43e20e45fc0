"""CAD configuration and routing: which converter handles a format for a tenant."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.plugin_api import ConfigError
from conveyor_cad.converter import Converter
from conveyor_cad.records import Routing

CONNECTOR_ID = "connector"


def _parse_routes(text: str, origin: str) -> dict[str, Routing]:
    routes: dict[str, Routing] = {}
    for part in [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]:
        fmt, sep, policy = part.partition("=")
        if not sep:
            raise ConfigError(f"{origin}: {part!r} is not FORMAT=POLICY (e.g. step=connector-then-local)")
        try:
            routes[fmt.strip().lower()] = Routing(policy.strip())
        except ValueError:
            raise ConfigError(f"{origin}: policy {policy.strip()!r} for {fmt.strip()!r} is not one of "
                              f"{', '.join(r.value for r in Routing)}") from None
    return routes


@dataclass(frozen=True)
class CadConfig:
    """CAD settings: limits, connector endpoint and routing (env ``CONVEYOR_CAD_*`` or ``[cad]`` in the TOML)."""

    time_limit_s: float = 120.0
    memory_mb: int = 3072
    preview_size: int = 512
    connector_url: str | None = None
    connector_token: str | None = None
    connector_timeout_s: float = 60.0
    #: ``auto`` sends a presigned ``file_url`` when storage can sign (S3), else the bytes
    connector_upload: str = "auto"
    routes: Mapping[str, Routing] = field(default_factory=dict)
    tenant_routes: Mapping[str, Mapping[str, Routing]] = field(default_factory=dict)
    #: ``auto`` (sandbox where available, else fork), ``sandbox`` (required), ``fork``, ``subprocess``
    isolation: str = "auto"
    #: sandbox backend id to use (default: the strongest available)
    sandbox: str | None = None
    #: more directories a conversion box may read (a converter's own data or modules)
    sandbox_paths: tuple[str, ...] = ()
    #: largest file a conversion may write (GLB, PNG), MiB
    output_mb: int = 512
    #: entities a drawing may expand to through block references (DXF INSERT/MINSERT)
    max_expanded_entities: int = 200_000

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> CadConfig:
        """Environment first, then the ``[cad]`` table of ``CONVEYOR_CONFIG``/``conveyor.toml``."""
        env = os.environ if env is None else env
        file_cfg: dict[str, Any] = {}
        cfg_path = Path(env.get("CONVEYOR_CONFIG") or "conveyor.toml")
        if cfg_path.is_file():
            try:
                file_cfg = dict(tomllib.loads(cfg_path.read_text()).get("cad", {}))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{cfg_path}: not valid TOML ({exc})") from None

        def get(name: str, kind: type, default: Any) -> Any:
            var = f"CONVEYOR_CAD_{name.upper()}"
            raw = env.get(var) or file_cfg.get(name)
            if raw in (None, ""):
                return default
            try:
                return kind(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"{var} must be {kind.__name__}, got {raw!r}") from None

        routes_raw = get("routing", str, "")
        if isinstance(file_cfg.get("routing"), dict):
            routes_raw = ",".join(f"{k}={v}" for k, v in file_cfg["routing"].items())
        tenant_routes: dict[str, dict[str, Routing]] = {}
        for chunk in [c.strip() for c in get("tenant_routing", str, "").split("|") if c.strip()]:
            tenant, sep, rest = chunk.partition(":")
            if not sep:
                raise ConfigError(f"CONVEYOR_CAD_TENANT_ROUTING: {chunk!r} is not TENANT:FORMAT=POLICY,...")
            tenant_routes[tenant.strip()] = _parse_routes(rest, "CONVEYOR_CAD_TENANT_ROUTING")
        upload = get("connector_upload", str, "auto")
        if upload not in ("auto", "file", "url"):
            raise ConfigError(f"CONVEYOR_CAD_CONNECTOR_UPLOAD must be auto, file or url, got {upload!r}")
        isolation = get("isolation", str, "auto")
        if isolation not in ("auto", "sandbox", "fork", "subprocess"):
            raise ConfigError(f"CONVEYOR_CAD_ISOLATION must be auto, sandbox, fork or subprocess, got {isolation!r}")
        raw_paths = env.get("CONVEYOR_CAD_SANDBOX_PATHS") or file_cfg.get("sandbox_paths") or ()
        paths = raw_paths.replace(",", os.pathsep).split(os.pathsep) if isinstance(raw_paths, str) else raw_paths
        sandbox_paths = tuple(str(p).strip() for p in paths if str(p).strip())
        for p in sandbox_paths:
            if not os.path.isabs(p):
                raise ConfigError(f"CONVEYOR_CAD_SANDBOX_PATHS entries must be absolute paths, got {p!r}")
        ints = {name: get(name, int, default) for name, default in
                (("memory_mb", 3072), ("preview_size", 512), ("output_mb", 512), ("max_expanded_entities", 200_000))}
        for name, value in ints.items():
            if value <= 0:
                raise ConfigError(f"CONVEYOR_CAD_{name.upper()} must be positive, got {value}")
        return cls(time_limit_s=get("time_limit", float, 120.0), memory_mb=ints["memory_mb"],
                   preview_size=ints["preview_size"], connector_url=get("connector_url", str, None),
                   connector_token=get("connector_token", str, None),
                   connector_timeout_s=get("connector_timeout", float, 60.0), connector_upload=upload,
                   routes=_parse_routes(routes_raw, "CONVEYOR_CAD_ROUTING"), tenant_routes=tenant_routes,
                   isolation=isolation, sandbox=get("sandbox", str, None), sandbox_paths=sandbox_paths,
                   output_mb=ints["output_mb"], max_expanded_entities=ints["max_expanded_entities"])

    def policy(self, fmt: str, tenant: str = "default") -> Routing:
        """The routing policy of a format for a tenant (tenant override, then global, then ``*``, else local)."""
        for table in (self.tenant_routes.get(tenant, {}), self.routes):
            for k in (fmt, "*"):
                if k in table:
                    return table[k]
        return Routing.LOCAL


@dataclass(frozen=True)
class Route:
    """The converters a conversion will try, in order."""

    policy: Routing
    chain: tuple[Converter, ...]

    def describe_route(self) -> str:
        """``connector → brep`` style summary."""
        return " → ".join(c.id for c in self.chain)


def local_converter(converters: Iterable[Converter], fmt: str) -> Converter | None:
    """The first registered local converter that accepts the format."""
    for conv in converters:
        if conv.id != CONNECTOR_ID and conv.accepts(fmt):
            return conv
    return None


def choose(converters: Any, fmt: str | None, tenant: str, cfg: CadConfig, forced: str | None = None) -> Route | None:
    """The route for a format, or None if nothing can convert it."""
    if fmt is None:
        return None
    if forced:
        conv = converters.get(forced)
        return Route(Routing.LOCAL, (conv,)) if conv is not None else None
    policy = cfg.policy(fmt, tenant)
    local = local_converter(converters, fmt)
    connector = converters.get(CONNECTOR_ID) if cfg.connector_url else None
    if policy is Routing.CONNECTOR and connector is not None:
        return Route(policy, (connector,))
    if policy is Routing.CONNECTOR_THEN_LOCAL and connector is not None:
        return Route(policy, (connector, local) if local else (connector,))
    return Route(Routing.LOCAL, (local,)) if local else None
