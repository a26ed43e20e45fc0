"""`conveyor token` and `conveyor api` as an operator runs them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import jwt
import pytest
from api_support import SECRET, free_port


def run(args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "conveyor", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_token_mints_hs256_tokens_with_the_secret(tmp_path):
    api_env = {"CONVEYOR_JWT_SECRET": SECRET, "CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/c.db", "CONVEYOR_PLUGINS": ""}
    r = run(["token", "--sub", "ci-bot", "--tenant", "acme", "--org", "ops", "--admin", "--ttl", "120"], api_env)
    assert r.returncode == 0, r.stderr
    claims = jwt.decode(r.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ci-bot" and claims["tenant"] == "acme" and claims["org"] == "ops"
    assert claims["roles"] == ["admin"] and 115 <= claims["exp"] - claims["iat"] <= 120
    r = run(["token", "--sub", "x"], {**api_env, "CONVEYOR_JWT_SECRET": ""})
    assert r.returncode == 2 and "CONVEYOR_JWT_SECRET is not set" in r.stderr
    r = run(["token", "--sub", "x"], {**api_env, "CONVEYOR_JWT_SECRET": "short"})
    assert r.returncode == 2 and "at least 32 bytes" in r.stderr
    r = run(["token", "--sub", "x", "--tenant", "*"], api_env)
    assert r.returncode == 2 and "--admin" in r.stderr
    r = run(["config"], {**api_env, "CONVEYOR_METRICS_TOKEN": "very-secret-scrape-token"})
    assert SECRET not in r.stdout and "very-secret-scrape-token" not in r.stdout
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "***" in lines["jwt_secret"] and "***" in lines["metrics_token"]


@pytest.mark.parametrize("workers", [1, 2])
def test_conveyor_api_serves_jobs_with_a_minted_token(api_env, api_app, workers):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "api", "--port", str(port), "--workers", str(workers)],
                            env={**os.environ, **api_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "conveyor api did not answer"
            time.sleep(0.1)
        tok = run(["token", "--sub", "ops"], api_env).stdout.strip()
        r = httpx.post(base + "/jobs", json={"kind": "conveyor.echo", "payload": [1]},
                       headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 201, r.text
        assert api_app.get(r.json()["id"]).payload == [1]
        assert httpx.get(base + "/jobs").status_code == 401
        # an open event stream does not keep SIGTERM from stopping the server
        opened = threading.Event()

        def listen():
            try:
                with httpx.stream("GET", base + "/events/stream", headers={"Authorization": f"Bearer {tok}"},
                                  timeout=60) as resp:
                    for _ in resp.iter_lines():
                        opened.set()
            except httpx.HTTPError:
                pass

        threading.Thread(target=listen, daemon=True).start()
        assert opened.wait(10)
    finally:
        t0 = time.monotonic()
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert "Traceback" not in err, err
    assert f"conveyor api on http://127.0.0.1:{port}/api/v1" in err


def test_conveyor_api_refuses_a_bad_key_configuration_before_serving(api_env, api_app):
    r = run(["api", "--port", str(free_port())], {**api_env, "CONVEYOR_JWT_SECRET": "short"})
    assert r.returncode == 2 and "at least 32" in r.stderr and "Traceback" not in r.stderr
