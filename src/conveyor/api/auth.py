"""Who is calling: the ``conveyor_authenticate`` hook first, then a bearer JWT verified with PyJWT.

Keys and algorithms are pinned by the configuration, never by the token:

- ``CONVEYOR_JWT_PUBLIC_KEY`` (a PEM file, or PEM text) or ``CONVEYOR_JWT_JWKS_FILE``:
  RS256 for RSA keys, ES256/ES384/ES512 for EC keys by curve (a JWKS key's ``alg`` when
  it names one). HS256 is then refused, whatever ``CONVEYOR_JWT_SECRET`` says.
- else ``CONVEYOR_JWT_SECRET`` (at least 32 bytes): HS256 only.

``alg: none`` is never accepted. Tokens must carry ``sub`` and ``exp``;
``CONVEYOR_JWT_AUDIENCE`` and ``CONVEYOR_JWT_ISSUER``, when set, must match ``aud`` and ``iss``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from conveyor.api.errors import unauthorized
from conveyor.config import Settings
from conveyor.errors import ConfigError, InvalidJob
from conveyor.limits import TEXT_LIMITS, check_text

log = logging.getLogger("conveyor.api.auth")

ADMIN_ROLE = "admin"
#: the tenant claim of an admin token that may read every tenant
ALL_TENANTS = "*"
HMAC_ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
LEEWAY_S = 5


@dataclass(frozen=True)
class Identity:
    """The caller: a subject, the tenant and org it acts in, its roles, and what else it may select."""

    subject: str
    tenant: str = "default"
    org: str | None = None
    roles: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()  # more tenants x-tenant-id may select
    orgs: frozenset[str] = frozenset()  # more orgs x-org-id may select
    source: str = "jwt"
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def admin(self) -> bool:
        """Whether the caller has the ``admin`` role."""
        return ADMIN_ROLE in self.roles

    @property
    def all_tenants(self) -> bool:
        """An admin whose ``tenant`` claim is ``*``: it may read every tenant."""
        return self.tenant == ALL_TENANTS and self.admin

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], source: str = "jwt") -> Identity:
        """Build from JWT claims (or a hook's mapping); raises ValueError naming a malformed claim."""
        sub = claims.get("sub", claims.get("subject"))
        if not isinstance(sub, str) or not sub:
            raise ValueError("the sub claim must be a non-empty string")
        tenant = claims.get("tenant", "default")
        tenant = "default" if tenant is None else tenant
        org = claims.get("org")
        roles = _strings("roles", claims.get("roles"))
        if tenant == ALL_TENANTS and ADMIN_ROLE not in roles:
            raise ValueError("the tenant claim '*' is only for tokens with the admin role")
        try:
            if tenant != ALL_TENANTS:
                check_text("tenant", tenant, TEXT_LIMITS["tenant"])
            check_text("org", org, TEXT_LIMITS["org"])
            tenants = _strings("tenants", claims.get("tenants"))
            orgs = _strings("orgs", claims.get("orgs"))
            for t in tenants:
                check_text("tenants", t, TEXT_LIMITS["tenant"])
            for o in orgs:
                check_text("orgs", o, TEXT_LIMITS["org"])
        except InvalidJob as exc:
            raise ValueError(exc.message) from None
        if not isinstance(tenant, str) or not tenant:
            raise ValueError("the tenant claim must be a non-empty string")
        return cls(sub, tenant, org or None, roles, tenants, orgs, source, dict(claims))


def _strings(name: str, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = value.split() if " " in value else [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"the {name} claim must be a list of strings")
    return frozenset(value)


# ---------------------------------------------------------------- keys

def _read_key_material(value: str, what: str) -> bytes:
    if value.lstrip().startswith("-----BEGIN") or value.lstrip().startswith("{"):
        return value.encode()
    path = Path(value).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {value!r} cannot be read ({exc.strerror}); point it at a readable file") from None


_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _algorithm_of(key: Any, what: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg:
            return alg
        raise ConfigError(f"{what}: EC curve {key.curve.name} is not supported; use P-256, P-384 or P-521")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ConfigError(f"{what}: a {type(key).__name__} cannot verify tokens; use an RSA or EC public key")


def load_public_key(value: str) -> tuple[Any, str]:
    """A PEM public key (or certificate) and the one algorithm it verifies."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    what = "CONVEYOR_JWT_PUBLIC_KEY"
    data = _read_key_material(value, what)
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        if b"PRIVATE KEY" in data:
            raise ConfigError(f"{what} holds a private key; give the API the public key only") from None
        raise ConfigError(f"{what} is not a PEM public key or certificate ({exc})") from None
    return key, _algorithm_of(key, what)


def load_jwks(value: str) -> dict[str | None, tuple[Any, str]]:
    """The verifying keys of a JWKS file, by ``kid``, each with its one algorithm (symmetric keys are refused)."""
    what = "CONVEYOR_JWT_JWKS_FILE"
    data = _read_key_material(value, what)
    try:
        doc = json.loads(data)
        keys = doc["keys"] if isinstance(doc, dict) else None
        if not isinstance(keys, list) or not keys:
            raise ValueError("no \"keys\" list")
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{what} is not a JWKS document ({exc})") from None
    out: dict[str | None, tuple[Any, str]] = {}
    for i, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise ConfigError(f"{what}: key {i} is not an object")
        if jwk.get("kty") == "oct":
            raise ConfigError(f"{what}: key {jwk.get('kid', i)} is symmetric (oct); a JWKS here holds public keys "
                              "only (use CONVEYOR_JWT_SECRET for HS256)")
        if jwk.get("use") not in (None, "sig"):
            continue
        try:
            parsed = jwt.PyJWK(jwk)
        except jwt.PyJWKError as exc:
            raise ConfigError(f"{what}: key {jwk.get('kid', i)}: {exc}") from None
        alg = jwk.get("alg") or _algorithm_of(parsed.key, what)
        if alg == HMAC_ALGORITHM or alg.startswith("HS") or alg == "none":
            raise ConfigError(f"{what}: key {jwk.get('kid', i)} names algorithm {alg}; only public-key "
                              "algorithms are accepted")
        out[jwk.get("kid")] = (parsed.key, alg)
    if not out:
        raise ConfigError(f"{what} has no signing key")
    return out


class Verifier:
    """Checks bearer tokens against the configured key; one per API application."""

    def __init__(self, settings: Settings) -> None:
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self._keys: dict[str | None, tuple[Any, str]] = {}
        self._secret: bytes | None = None
        if settings.jwt_jwks_file:
            self._keys = load_jwks(settings.jwt_jwks_file)
        if settings.jwt_public_key:
            key, alg = load_public_key(settings.jwt_public_key)
            self._keys.setdefault(None, (key, alg))
        if not self._keys and settings.jwt_secret:
            secret = settings.jwt_secret.encode()
            if len(secret) < MIN_SECRET_BYTES:
                raise ConfigError(f"CONVEYOR_JWT_SECRET is {len(secret)} bytes; HS256 needs at least "
                                  f"{MIN_SECRET_BYTES}: `python -c 'import secrets; print(secrets.token_hex(32))'`")
            self._secret = secret
        if self._keys and settings.jwt_secret:
            log.info("a public key is configured: HS256 tokens (CONVEYOR_JWT_SECRET) are refused")

    @property
    def configured(self) -> bool:
        """Whether any key is configured (without one every token is refused)."""
        return bool(self._keys or self._secret)

    @property
    def mode(self) -> str:
        """``public-key``, ``hmac`` or ``none``."""
        return "public-key" if self._keys else "hmac" if self._secret else "none"

    def _key_for(self, header: Mapping[str, Any]) -> tuple[Any, list[str]]:
        if self._secret is not None:
            return self._secret, [HMAC_ALGORITHM]
        kid = header.get("kid")
        if kid in self._keys:
            key, alg = self._keys[kid]
        elif kid is None and len(self._keys) == 1:
            key, alg = next(iter(self._keys.values()))
        elif None in self._keys and kid is not None and len(self._keys) == 1:
            key, alg = self._keys[None]
        else:
            raise unauthorized("the token's key id (kid) names no configured key")
        return key, [alg]

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; ApiError 401 naming what is wrong otherwise."""
        if not self.configured:
            raise unauthorized("the API has no key to verify tokens with: set CONVEYOR_JWT_SECRET, "
                               "CONVEYOR_JWT_PUBLIC_KEY or CONVEYOR_JWT_JWKS_FILE")
        if self._secret is not None:  # one key: PyJWT checks the algorithm, the header is read only to explain
            key, algorithms = self._secret, [HMAC_ALGORITHM]
        else:
            key, algorithms = self._key_for(self._header(token))
        try:
            return dict(jwt.decode(token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer,
                                   leeway=LEEWAY_S, options={"require": ["exp", "sub"]}))
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("the token is for another audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("the token is from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the token lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            alg = self._header(token).get("alg")
            raise unauthorized(f"tokens signed with {str(alg)[:20]!r} are not accepted here; "
                               f"this API accepts {', '.join(algorithms)}") from None
        except jwt.DecodeError:
            self._header(token)
            raise unauthorized("the token is not valid (DecodeError)") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"the token is not valid ({type(exc).__name__})") from None

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        try:
            return dict(jwt.get_unverified_header(token))
        except jwt.InvalidTokenError:
            raise unauthorized("the bearer token is not a JWT") from None

    def identity(self, token: str) -> Identity:
        """Verify a token and read its identity claims."""
        claims = self.verify(token)
        try:
            return Identity.from_claims(claims)
        except ValueError as exc:
            raise unauthorized(f"the token's claims are not usable: {exc}") from None


def mint_token(secret: str, subject: str, *, tenant: str = "default", org: str | None = None,
               roles: Iterable[str] = (), ttl_s: float = 3600, audience: str | None = None,
               issuer: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """An HS256 token for development and tests (``conveyor token``)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "tenant": tenant, "iat": now, "exp": now + int(ttl_s)}
    if org:
        claims["org"] = org
    roles = sorted(set(roles))
    if roles:
        claims["roles"] = roles
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm=HMAC_ALGORITHM)
