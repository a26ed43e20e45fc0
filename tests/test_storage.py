"""The storage facade on local files and in memory (S3 is in tests/s3/)."""

from __future__ import annotations

import io
import uuid

import fsspec
import pytest

from conveyor.errors import ConfigError
from conveyor.storage import Storage, artifact_key


@pytest.fixture(params=["file", "memory"])
def storage(request, tmp_path):
    if request.param == "file":
        return Storage(f"file://{tmp_path}/store")
    return Storage(f"memory://conveyor-test-{uuid.uuid4().hex}")


def test_put_get_exists_delete_list(storage):
    key = artifact_key("job1", 2, "preview.png")
    assert key == "jobs/job1/2/preview.png"
    obj = storage.put(key, b"\x89PNG data")
    assert obj.size == 9 and len(obj.sha256) == 64
    assert storage.exists(key) and storage.get(key) == b"\x89PNG data"
    storage.put("jobs/job1/2/model.glb", io.BytesIO(b"x" * 3_000_000))
    assert list(storage.list("jobs/job1")) == ["jobs/job1/2/model.glb", "jobs/job1/2/preview.png"]
    with fsspec.open(storage.url(key), "rb") as f:
        assert f.read() == b"\x89PNG data"
    storage.delete("jobs/job1", recursive=True)
    assert not storage.exists(key)
    storage.delete(key)  # absent is fine


@pytest.mark.parametrize("key", ["../etc/passwd", "jobs/../../x", "", "/"])
def test_keys_cannot_escape_the_base(storage, key):
    with pytest.raises(ValueError, match="not a plain relative path"):
        storage.put(key, b"x")


def test_unknown_protocol_names_the_extra():
    with pytest.raises(ConfigError, match=r"CONVEYOR_STORAGE_URL .*Protocol not known"):
        Storage("nosuchproto://bucket/x")
