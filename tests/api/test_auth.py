"""Authentication: every bad token is 401; keys and algorithms are pinned; the hook comes first;
admin-only fields are left out for the others."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from api_support import SECRET, Server, auth, make_app, token
from conveyor_api_testroutes import API_KEY
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conveyor.api.app import create_app
from conveyor.errors import ConfigError


def _401(resp: httpx.Response, words: str) -> None:
    assert resp.status_code == 401, resp.text
    err = resp.json()["error"]
    assert err["code"] == "unauthorized" and words in err["message"], err
    assert resp.headers["www-authenticate"].startswith("Bearer")


def _claims(**over) -> dict:
    now = int(time.time())
    return {"sub": "mallory", "tenant": "default", "iat": now, "exp": now + 600, **over}


def _none_token(claims: dict) -> str:
    import base64

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.fixture
def hs_server(api_env):
    app = make_app(api_env, jwt_audience="conveyor-api", jwt_issuer="https://id.example")
    app.init_db()
    with Server(create_app(app)) as s:
        yield s.url + "/api/v1"
    app.close()
    app.engine.dispose()


def test_every_bad_token_is_401(hs_server):
    ok = jwt.encode(_claims(aud="conveyor-api", iss="https://id.example"), SECRET, algorithm="HS256")
    assert httpx.get(hs_server + "/jobs", headers=auth(ok)).status_code == 200
    cases = {
        "no bearer token": {},
        "must be 'Bearer": {"Authorization": f"Basic {ok}"},
        "not a JWT": auth("not.a.jwt"),
        "has expired": auth(jwt.encode(_claims(aud="conveyor-api", iss="https://id.example", exp=1000), SECRET,
                                       algorithm="HS256")),
        "signature does not verify": auth(jwt.encode(_claims(aud="conveyor-api", iss="https://id.example"),
                                                     "another-secret-of-at-least-32-bytes!!", algorithm="HS256")),
        "another audience": auth(jwt.encode(_claims(aud="someone-else", iss="https://id.example"), SECRET,
                                            algorithm="HS256")),
        "another issuer": auth(jwt.encode(_claims(aud="conveyor-api", iss="https://evil.example"), SECRET,
                                          algorithm="HS256")),
        "not accepted here": auth(_none_token(_claims(aud="conveyor-api", iss="https://id.example"))),
        "lacks the exp claim": auth(jwt.encode({"sub": "x", "aud": "conveyor-api", "iss": "https://id.example"},
                                               SECRET, algorithm="HS256")),
        "claims are not usable": auth(jwt.encode(_claims(aud="conveyor-api", iss="https://id.example",
                                                         tenant="*"), SECRET, algorithm="HS256")),
    }
    for words, headers in cases.items():
        for path in ("/jobs", "/jobs/x", "/events/stream", "/testroutes/whoami"):
            _401(httpx.get(hs_server + path, headers=headers), words)
        _401(httpx.post(hs_server + "/jobs", json={"kind": "conveyor.echo"}, headers=headers), words)


def _pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize("curve", ["rsa", "ec"])
def test_public_key_tokens_and_no_hs256_when_a_key_is_configured(api_env, tmp_path, curve):
    key = rsa.generate_private_key(65537, 2048) if curve == "rsa" else ec.generate_private_key(ec.SECP256R1())
    alg = "RS256" if curve == "rsa" else "ES256"
    (tmp_path / "pub.pem").write_text(_pem(key))
    app = make_app(api_env, jwt_public_key=str(tmp_path / "pub.pem"))  # CONVEYOR_JWT_SECRET is set too
    app.init_db()
    with Server(create_app(app)) as s:
        url = s.url + "/api/v1/jobs"
        good = jwt.encode(_claims(), key, algorithm=alg)
        assert httpx.get(url, headers=auth(good)).status_code == 200
        _401(httpx.get(url, headers=auth(token())), "not accepted here")  # HS256 with the secret
        other = rsa.generate_private_key(65537, 2048) if curve == "rsa" else ec.generate_private_key(ec.SECP256R1())
        _401(httpx.get(url, headers=auth(jwt.encode(_claims(), other, algorithm=alg))), "does not verify")
        # the public key's bytes used as an HMAC secret (the classic key confusion attack)
        import base64
        import hashlib
        import hmac
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(_claims()).encode()).rstrip(b"=")
        sig = base64.urlsafe_b64encode(hmac.new(_pem(key).encode(), head + b"." + body, hashlib.sha256).digest())
        confused = (head + b"." + body + b"." + sig.rstrip(b"=")).decode()
        _401(httpx.get(url, headers=auth(confused)), "not accepted here")
        _401(httpx.get(url, headers=auth(_none_token(_claims()))), "not accepted here")
    app.close()
    app.engine.dispose()


def test_jwks_file_picks_the_key_by_kid(api_env, tmp_path):
    k1 = rsa.generate_private_key(65537, 2048)
    k2 = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": []}
    for kid, k, alg in (("one", k1, "RS256"), ("two", k2, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(k.public_key()))
        jwks["keys"].append({**jwk, "kid": kid, "use": "sig"})
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    app = make_app(api_env, jwt_jwks_file=str(tmp_path / "jwks.json"), jwt_secret="")
    app.init_db()
    with Server(create_app(app)) as s:
        url = s.url + "/api/v1/jobs"
        for kid, k, alg in (("one", k1, "RS256"), ("two", k2, "ES256")):
            assert httpx.get(url, headers=auth(jwt.encode(_claims(), k, alg, headers={"kid": kid}))).status_code \
                == 200
        _401(httpx.get(url, headers=auth(jwt.encode(_claims(), k1, "RS256", headers={"kid": "two"}))),
             "not accepted here")
        _401(httpx.get(url, headers=auth(jwt.encode(_claims(), k1, "RS256", headers={"kid": "three"}))),
             "names no configured key")
        _401(httpx.get(url, headers=auth(jwt.encode(_claims(), SECRET, "HS256", headers={"kid": "one"}))),
             "not accepted here")
    app.close()
    app.engine.dispose()


def test_key_configuration_mistakes_fail_at_start(api_env, tmp_path):
    with pytest.raises(ConfigError, match="at least 32"):
        create_app(make_app(api_env, jwt_secret="short"))
    with pytest.raises(ConfigError, match="cannot be read"):
        create_app(make_app(api_env, jwt_public_key=str(tmp_path / "missing.pem")))
    priv = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "priv.pem").write_bytes(priv)
    with pytest.raises(ConfigError, match="private key"):
        create_app(make_app(api_env, jwt_public_key=str(tmp_path / "priv.pem")))
    (tmp_path / "oct.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    with pytest.raises(ConfigError, match="symmetric"):
        create_app(make_app(api_env, jwt_jwks_file=str(tmp_path / "oct.json")))


def test_without_any_key_every_token_is_refused(api_env):
    app = make_app(api_env, jwt_secret="")
    app.init_db()
    with Server(create_app(app)) as s:
        _401(httpx.get(s.url + "/api/v1/jobs", headers=auth(token())), "no key to verify")
        assert httpx.get(s.url + "/api/v1/health").status_code == 200
        # the host application's hook still identifies its own callers
        r = httpx.get(s.url + "/api/v1/testroutes/whoami", headers={"x-api-key": API_KEY})
        assert r.json()["subject"] == "host-app-user" and r.json()["tenant"] == "hooked"
    app.close()
    app.engine.dispose()


def test_the_authenticate_hook_comes_before_the_token(http, server):
    r = httpx.post(server + "/api/v1/jobs", json={"kind": "conveyor.echo"},
                   headers={"x-api-key": API_KEY, "Authorization": "Bearer garbage"})
    assert r.status_code == 201 and r.json()["tenant_id"] == "hooked"
    assert http.get(f"/jobs/{r.json()['id']}").status_code == 404  # another tenant
    _401(httpx.get(server + "/api/v1/jobs", headers={"x-api-key": "wrong"}), "no bearer token")


def test_admin_only_fields_are_left_out_for_other_callers(http, server, api_app, worker):
    job_id = http.post("/jobs", json={"kind": "test.boom", "max_attempts": 1}).json()["id"]
    api_app.wait(job_id, timeout=60)
    mine = http.get(f"/jobs/{job_id}").json()
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", admin=True))) as admin:
        full = admin.get(f"/jobs/{job_id}").json()
    assert full["error_code"] == mine["error_code"] == "internal_error"
    assert "RuntimeError" in full["last_error"] and "RuntimeError" in full["error_history"][0]["message"]
    assert "RuntimeError" not in json.dumps(mine) and "Traceback" not in json.dumps(mine)
    assert mine["last_error"].startswith("An unexpected exception")
    assert "lease_owner" in full and "lease_owner" not in mine and "lease_expires_at" not in mine
    assert full["diagnostics"]["findings"] and "findings" not in mine["diagnostics"]
    assert "RuntimeError" not in mine["diagnostics"]["cause"]
    claimed = next(e for e in mine["events"] if e["action"] == "claimed")
    assert "consumer" not in claimed["payload"] and "entry_id" not in claimed["payload"]
    assert "consumer" in next(e for e in full["events"] if e["action"] == "claimed")["payload"]
    # a plain user may not list plugins; an admin sees the broken one
    assert http.get("/plugins").status_code == 403
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", admin=True))) as admin:
        plugins = {p["name"]: p for p in admin.get("/plugins").json()}
    assert "database is not configured" in plugins["conveyor_api_brokenroutes"]["error"]
    assert plugins["conveyor_api_testroutes"]["error"] is None


def test_a_stuck_job_is_diagnosed_without_infrastructure_details_for_other_callers(http, server, api_app):
    from datetime import timedelta

    from sqlalchemy import update

    from conveyor.db import utcnow
    from conveyor.schema import jobs, outbox
    job_id = http.post("/jobs", json={"kind": "conveyor.echo"}).json()["id"]
    assert http.get(f"/jobs/{job_id}").json()["diagnostics"] is None  # queued a moment ago: not stuck
    with api_app.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=utcnow() - timedelta(hours=1)))
        conn.execute(update(outbox).where(outbox.c.job_id == job_id).values(
            attempts=7, last_error="ConnectionError: redis.internal:6379 refused"))
    mine = http.get(f"/jobs/{job_id}").json()["diagnostics"]
    assert mine["cause"].startswith("the dispatcher cannot publish") and "redis.internal" not in mine["cause"]
    assert mine["next_step"].startswith("bring the queue back")
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", admin=True))) as admin:
        full = admin.get(f"/jobs/{job_id}").json()["diagnostics"]
    assert "redis.internal:6379" in full["cause"] and full["findings"]
