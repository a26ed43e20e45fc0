"""Helpers of the CAD tests: a dispatcher + worker in threads, waiting for jobs."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from pipeline_support import Pipeline, wait_for

FINAL = ("succeeded", "failed", "cancelled")
TEST_PLUGINS = "conveyor_testkinds,cad_test_converters"


def cad_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """CONVEYOR_* variables of a private CAD deployment."""
    return {
        "CONVEYOR_DB_URL": db_url,
        "CONVEYOR_QUEUE_URL": "sql",
        "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data",
        "CONVEYOR_STREAM_KEY": f"conveyor:cad:{uuid.uuid4().hex[:12]}",
        "CONVEYOR_LEASE_SECONDS": "20",
        "CONVEYOR_RECLAIM_GRACE_SECONDS": "2",
        "CONVEYOR_RETRY_BASE_SECONDS": "0.05",
        "CONVEYOR_RETRY_MAX_SECONDS": "0.2",
        "CONVEYOR_PLUGINS": TEST_PLUGINS,
    }


def glb_faces(data: bytes) -> int:
    """Faces of a GLB loaded back with trimesh."""
    import trimesh
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    return sum(len(g.faces) for g in scene.geometry.values())


def assert_png(data: bytes, size: int = 512) -> None:
    """A PNG of the right size that is not blank."""
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG" and im.size == (size, size)
    colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 2, "preview is blank"
    background = max(colors)[0] / (size * size)
    assert background < 0.995, f"preview is {background:.1%} background"


class CadPipeline(Pipeline):
    """The core suite's in-process dispatcher + worker, 2 slots by default."""

    def __init__(self, app, concurrency=2):
        super().__init__(app, concurrency=concurrency)

    def wait(self, job_ids, timeout=120.0):
        return wait_for(self.app, job_ids, timeout=timeout)
