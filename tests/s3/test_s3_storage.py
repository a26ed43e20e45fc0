"""S3 storage through s3fs against a real S3 HTTP API (moto server on loopback)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from moto_support import ACCESS_KEY, SECRET_KEY

from conveyor.config import load_settings
from conveyor.errors import ConfigError
from conveyor.outbox import Dispatcher, run_until_empty
from conveyor.storage import Storage, artifact_key

SRC = Path(__file__).resolve().parents[2] / "src"
TEST_PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture
def env(env, s3_url):
    """The core's private deployment with its artifacts in S3."""
    return {**env, "CONVEYOR_STORAGE_URL": s3_url}


def test_put_get_list_delete_round_trip(s3_url):
    st = Storage(s3_url, default_block_size=5 * 1024 * 1024)  # S3's smallest part size
    key = artifact_key("job1", 1, "preview.png")
    obj = st.put(key, b"\x89PNG data")
    assert obj.size == 9 and obj.sha256 == hashlib.sha256(b"\x89PNG data").hexdigest()
    assert obj.url == f"{s3_url}/{key}"
    big = os.urandom(11 * 1024 * 1024)  # three parts: a multipart upload
    assert st.put("jobs/job1/1/model.glb", io.BytesIO(big)).sha256 == hashlib.sha256(big).hexdigest()
    assert st.exists(key) and st.get(key) == b"\x89PNG data"
    assert st.get("jobs/job1/1/model.glb") == big
    assert list(st.list("jobs/job1")) == ["jobs/job1/1/model.glb", "jobs/job1/1/preview.png"]
    st.delete("jobs/job1", recursive=True)
    assert not st.exists(key) and list(st.list("jobs/job1")) == []
    st.delete(key)  # absent is fine


def test_attempts_never_overwrite_each_other(s3_url):
    st = Storage(s3_url)
    st.put(artifact_key("j", 1, "out.txt"), b"stale attempt")
    st.put(artifact_key("j", 2, "out.txt"), b"winner")
    assert st.get("jobs/j/1/out.txt") == b"stale attempt" and st.get("jobs/j/2/out.txt") == b"winner"


def test_signed_url_downloads_over_http_and_expires(s3_url, moto_server):
    st = Storage(s3_url)
    st.put("jobs/j/1/preview.png", b"image bytes")
    url = st.signed_url("jobs/j/1/preview.png", expires_s=120)
    assert url.startswith(moto_server.endpoint) and "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"image bytes"


def test_objects_written_by_another_process_are_seen_at_once(s3_url):
    st = Storage(s3_url)
    assert list(st.list("jobs/x")) == [] and not st.exists("jobs/x/1/a.txt")
    code = f"from conveyor.storage import Storage; Storage({s3_url!r}).put('jobs/x/1/a.txt', b'from a peer')"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60)
    assert st.exists("jobs/x/1/a.txt") and list(st.list("jobs/x")) == ["jobs/x/1/a.txt"]


def test_endpoint_and_keys_from_the_url_when_no_aws_variables(s3_url, moto_server, monkeypatch):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    bucket_prefix = s3_url.removeprefix("s3://")
    url = (f"s3://{quote(ACCESS_KEY)}:{quote(SECRET_KEY)}@{bucket_prefix}"
           f"?endpoint_url={quote(moto_server.endpoint)}&region=us-east-1")
    st = Storage(url)
    st.put("a/b.txt", b"ok")
    assert st.get("a/b.txt") == b"ok"
    assert SECRET_KEY not in st.base_url and SECRET_KEY not in st.url("a/b.txt")
    shown = load_settings(env={"CONVEYOR_STORAGE_URL": url}).masked()["storage_url"][0]
    assert SECRET_KEY not in shown and "***" in shown


def test_bad_s3_urls_are_config_errors(s3_env):
    with pytest.raises(ConfigError, match="unknown S3 option"):
        Storage("s3://bucket/p?endpoint=http://x")
    with pytest.raises(ConfigError, match="no bucket"):
        Storage("s3:///just-a-path")


def test_worker_process_writes_artifacts_to_s3(app, env, tmp_path, s3_url):
    job_id = app.submit("test.artifact")
    run_until_empty(Dispatcher(app.store, app.queue))
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(SRC), str(TEST_PLUGIN_DIR)])}
    out = subprocess.run([sys.executable, "-m", "conveyor", "worker", "--burst"], env=full, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    job = app.get(job_id)
    assert job.status.value == "succeeded" and job.result == {"key": f"jobs/{job_id}/1/out.txt"}
    fresh = Storage(s3_url)
    assert fresh.get(job.result["key"]) == b"attempt 1"
    with urllib.request.urlopen(fresh.signed_url(job.result["key"]), timeout=10) as resp:
        assert resp.read() == b"attempt 1"
