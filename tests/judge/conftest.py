"""Judge fixtures: a private cache, toolchains reachable by sandbox uids, a shared Judge and problem store."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conveyor.storage import Storage
from conveyor_sandbox.contract import DEFAULT_PATH

TOOLCHAINS = Path("/var/tmp/conveyor-judge-toolchains")


def _reachable_rust() -> str | None:
    """A bin directory with a rustc that sandbox uids can execute, linking the rustup toolchain if it is private."""
    from conveyor_judge.languages import unreachable

    found = shutil.which("rustc", path=DEFAULT_PATH)
    if found and not unreachable(found):
        return None
    rustup = shutil.which("rustup")
    if rustup is None:
        return None
    real = subprocess.run([rustup, "which", "rustc"], capture_output=True, text=True).stdout.strip()
    if not real or not unreachable(real):
        return str(Path(real).parent) if real else None
    toolchain = Path(real).parent.parent
    dest = TOOLCHAINS / toolchain.name
    if not (dest / "bin" / "rustc").exists():
        TOOLCHAINS.mkdir(parents=True, exist_ok=True)
        os.chmod(TOOLCHAINS, 0o755)
        tmp = TOOLCHAINS / f".tmp-{uuid.uuid4().hex}"
        # hard links: the real toolchain, at a path every uid can walk, without a 1 GiB copy
        r = subprocess.run(["cp", "-al", str(toolchain), str(tmp)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["cp", "-a", str(toolchain), str(tmp)], check=True)
        os.rename(tmp, dest)
    return str(dest / "bin")


@pytest.fixture(scope="session", autouse=True)
def judge_environment():
    """CONVEYOR_JUDGE_CACHE under /var/tmp (sandbox uids must walk to their work directories) and the judge PATH."""
    saved = {k: os.environ.get(k) for k in ("CONVEYOR_JUDGE_CACHE", "CONVEYOR_JUDGE_PATH")}
    cache = Path(f"/var/tmp/conveyor-judge-test-{uuid.uuid4().hex[:8]}")
    os.environ["CONVEYOR_JUDGE_CACHE"] = str(cache)
    extra = _reachable_rust()
    os.environ["CONVEYOR_JUDGE_PATH"] = f"{extra}:{DEFAULT_PATH}" if extra else DEFAULT_PATH
    yield {"CONVEYOR_JUDGE_CACHE": str(cache), "CONVEYOR_JUDGE_PATH": os.environ["CONVEYOR_JUDGE_PATH"]}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    from conveyor_sandbox.cleanup import CleanupError, remove_tree
    try:
        remove_tree(cache)  # what programs left may be thousands of levels deep
    except CleanupError as exc:
        print(f"judge test cache {cache} not fully removed: {exc}")


@pytest.fixture(scope="session")
def judge(judge_environment):
    """One Judge for the session: the real sandbox, languages and checkers from the entry points."""
    from conveyor_judge.engine import Judge
    return Judge()


@pytest.fixture(scope="session")
def store(judge):
    """A problem store on private memory storage."""
    from conveyor_judge.problems import ProblemStore
    return ProblemStore(Storage(f"memory://judge-{uuid.uuid4().hex[:8]}"), judge.root)


@pytest.fixture(scope="session")
def aplusb(store):
    """The built-in A+B problem (1 s, 64 MiB, three tests)."""
    from conveyor_judge.selftest import aplusb_package
    return store.load(store.add(aplusb_package()).id)


def make_zip(files: dict[str, bytes | str]) -> bytes:
    """A zip of the given files."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
