"""Fetch the real test files a manifest pins: `apt-get download NAME=VERSION`, sha256-checked, `dpkg-deb -x`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, sha256: str) -> Path:
    """The downloaded file, or deleted and an error when it is not the one the manifest pins."""
    got = _sha256(path)
    if got != sha256:
        path.unlink()
        raise RuntimeError(f"{path.name}: sha256 {got} does not match the manifest's {sha256}")
    return path


def _cache_root(manifest_text: str) -> Path:
    base = Path(os.environ.get("CONVEYOR_TEST_DATA_CACHE") or Path.home() / ".cache" / "conveyor-test-data")
    return base / hashlib.sha256(manifest_text.encode()).hexdigest()[:16]


def _download(pkg: dict, dest: Path) -> Path:
    deb = dest / pkg["deb"]
    if deb.exists() and _sha256(deb) == pkg["sha256"]:
        return deb
    spec = f"{pkg['name']}={pkg['version']}"
    for attempt in range(2):
        proc = subprocess.run(["apt-get", "download", spec], cwd=dest, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600)
        if proc.returncode == 0 and deb.exists():
            break
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, stdin=subprocess.DEVNULL, timeout=600)
    else:
        raise RuntimeError(f"apt-get download {spec} failed: {proc.stderr[-800:]}")
    return _verified(deb, pkg["sha256"])


def _download_sdist(sd: dict, dest: Path) -> Path:
    archive = dest / sd["file"]
    if archive.exists() and _sha256(archive) == sd["sha256"]:
        return archive
    proc = subprocess.run([sys.executable, "-m", "pip", "download", f"{sd['name']}=={sd['version']}",
                           "--no-binary", sd["name"], "--no-deps", "--disable-pip-version-check", "-d", str(dest)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if proc.returncode != 0 or not archive.exists():
        raise RuntimeError(f"pip download {sd['name']}=={sd['version']} failed: {proc.stderr[-800:]}")
    return _verified(archive, sd["sha256"])


def fetch_manifest_files(manifest: Path) -> dict[str, Path]:
    """Every file of the manifest as a verified local path (downloaded once into a cache keyed by the manifest)."""
    text = Path(manifest).read_text()
    manifest = json.loads(text)
    root = _cache_root(text)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for pkg in manifest["packages"]:
        tree = root / pkg["name"]
        marker = tree / ".extracted"
        if not marker.exists():
            deb = _download(pkg, root)
            shutil.rmtree(tree, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, capture_output=True)
            marker.write_text(pkg["sha256"])
    for sd in manifest.get("sdists", []):
        tree = root / sd["name"]
        marker = tree / ".extracted"
        if not marker.exists():
            archive = _download_sdist(sd, root)
            shutil.rmtree(tree, ignore_errors=True)
            with tarfile.open(archive) as tf:
                members = [m for m in tf.getmembers() if m.name.startswith(sd["extract"])]
                tf.extractall(tree, members=members, filter="data")
            marker.write_text(sd["sha256"])
    for f in manifest["files"]:
        path = root / f["package"] / f["path"].lstrip("/")
        if not path.is_file():
            raise RuntimeError(f"{f['id']}: {f['path']} is not in {f['package']} {f['version']}")
        got = _sha256(path)
        if got != f["sha256"]:
            raise RuntimeError(f"{f['id']}: sha256 {got} does not match the manifest's {f['sha256']}")
        out[f["id"]] = path
    return out


