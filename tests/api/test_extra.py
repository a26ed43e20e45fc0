"""Without the api extra the core still imports and works; the API says which extra to install."""

from __future__ import annotations

import subprocess
import sys

BLOCK = "import sys\nfor m in ('fastapi', 'uvicorn', 'jwt', 'httpx', 'starlette'):\n    sys.modules[m] = None\n"


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/c.db", "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data",
           "CONVEYOR_JWT_SECRET": "x" * 40, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)


def test_the_core_imports_and_submits_without_the_api_extra(tmp_path):
    r = _run("import conveyor, conveyor.api, conveyor.client, conveyor.cli\n"
             "from conveyor.app import Conveyor\n"
             "app = Conveyor(); app.init_db(); print(app.get(app.submit('conveyor.echo', 1)).status.value)\n",
             tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "queued"


def test_the_api_names_the_extra_it_needs(tmp_path):
    for code in ("from conveyor.api import create_app; create_app()",
                 "from conveyor.client import Client; Client('http://x')"):
        r = _run(code, tmp_path)
        assert r.returncode == 1 and "pip install 'conveyor-jobs[api]'" in r.stderr, r.stderr
    for args in (["api"], ["token", "--sub", "x"]):
        r = _run(f"import sys; sys.argv = ['conveyor', *{args!r}]\nfrom conveyor.cli import main; main()", tmp_path)
        assert r.returncode == 2, r.stderr
        assert "error: the HTTP API needs fastapi, uvicorn, PyJWT, httpx: pip install 'conveyor-jobs[api]'" \
            in r.stderr and "Traceback" not in r.stderr
