"""Hostile CAD input: conversions in a sandbox box, glTF references, DXF block bombs, crashes, forged results."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
from cad_support import TEST_PLUGINS, CadPipeline, cad_env

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_cad.converter import ConvertOptions
from conveyor_cad.files import add_file, get_file
from conveyor_cad.records import ConversionError

ROOT = Path(__file__).resolve().parents[2]


def _box_or_skip(app=None):
    from conveyor_cad.isolation import isolation_mode
    from conveyor_cad.routing import CadConfig

    _, sandbox, why = isolation_mode(CadConfig.load(), app.plugins.registry("sandboxes") if app else None)
    if sandbox is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root with namespaces: a conversion sandbox must be available ({why})")
        pytest.skip(f"no sandbox for conversions on this host: {why}")
    return sandbox


def _run(app, data, name, converter=None, timeout=120):
    a = add_file(app, data, name, convert=converter is None)
    job_id = a.job_id
    if converter is not None:
        job_id = app.submit("cad.convert", {"file_id": a.file.id, "converter": converter}, file_id=a.file.id)
    with CadPipeline(app) as p:
        (job,) = p.wait([job_id], timeout=timeout)
    return job, get_file(app.engine, a.file.id)


def _files_under(*roots):
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                yield Path(dirpath, n)


# ------------------------------------------------------------------ glTF references


@pytest.fixture
def secret_file():
    """A root-only file outside /tmp (0600 in a 0700 directory under /var/tmp) holding a unique marker."""
    base = Path(tempfile.mkdtemp(prefix="conveyor-secret-", dir="/var/tmp"))
    os.chmod(base, 0o700)
    marker = b"CONVEYOR-SECRET-" + secrets.token_hex(16).encode()
    path = base / "secret.bin"
    import trimesh

    files = trimesh.Scene(trimesh.creation.box()).export(file_type="gltf")
    buffer = next(v for k, v in files.items() if k.endswith(".bin"))
    path.write_bytes(buffer + marker * 4)
    os.chmod(path, 0o600)
    yield path, marker, json.loads(files["model.gltf"])
    shutil.rmtree(base, ignore_errors=True)


def _gltf_pointing_at(tree, uri, size):
    tree = json.loads(json.dumps(tree))
    tree["buffers"][0]["uri"] = uri
    tree["buffers"][0]["byteLength"] = size
    return json.dumps(tree).encode()


def _uris(path: Path):
    return {"absolute": str(path), "dotdot": "../" * 16 + str(path).lstrip("/"),
            "file_url": f"file://{path}", "encoded": "%2e%2e/" * 16 + str(path).lstrip("/")}


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
@pytest.mark.parametrize("isolation", ["auto", "fork"])
def test_gltf_buffer_uri_outside_its_folder_is_refused_and_nothing_leaks(cad_app, secret_file, monkeypatch, tmp_path,
                                                                         kind, isolation):
    """A .gltf whose buffer names a root-only file: unsafe_reference, whatever the box (fork runs as root)."""
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", isolation)
    path, marker, tree = secret_file
    data = _gltf_pointing_at(tree, _uris(path)[kind], path.stat().st_size)
    job, rec = _run(cad_app, data, "model.gltf")
    assert rec.cad_format == "gltf"
    assert job.status.value == "failed" and job.error_code == "unsafe_reference", job.last_error
    assert rec.conversion_status == "failed" and rec.conversion_error["code"] == "unsafe_reference"
    assert rec.geometry_path is None and rec.preview_path is None
    assert marker not in json.dumps(rec.conversion_error).encode() and marker.decode() not in (job.last_error or "")
    for f in _files_under(tmp_path):  # storage (no GLB, no metadata written) and the job database
        assert marker not in f.read_bytes(), f


def test_gltf_check_runs_before_and_without_trimesh(tmp_path, secret_file, monkeypatch):
    """The check does not rely on the library: it refuses before trimesh is asked to load anything."""
    import trimesh

    from conveyor_cad.mesh import MeshConverter

    path, _, tree = secret_file

    def no_load(*a, **kw):
        raise AssertionError("trimesh.load must not be reached")

    monkeypatch.setattr(trimesh, "load", no_load)
    for kind, uri in _uris(path).items():
        src = tmp_path / f"{kind}.gltf"
        src.write_bytes(_gltf_pointing_at(tree, uri, 10))
        with pytest.raises(ConversionError) as err:
            MeshConverter().convert(src, tmp_path, ConvertOptions(format="gltf", filename=src.name))
        assert err.value.code == "unsafe_reference", kind
    # images, extensions and GLB JSON chunks are checked the same way
    img = json.loads(json.dumps(tree))
    img["images"] = [{"uri": "/root/.ssh/id_rsa"}]
    (tmp_path / "img.gltf").write_text(json.dumps(img))
    with pytest.raises(ConversionError, match="absolute"):
        MeshConverter().convert(tmp_path / "img.gltf", tmp_path, ConvertOptions(format="gltf", filename="img.gltf"))
    body = json.dumps({"asset": {"version": "2.0"}, "buffers": [{"byteLength": 4, "uri": str(path)}]}).encode()
    body += b" " * (-len(body) % 4)
    glb = b"glTF" + (2).to_bytes(4, "little") + (20 + len(body)).to_bytes(4, "little") \
        + len(body).to_bytes(4, "little") + b"JSON" + body
    (tmp_path / "ext.glb").write_bytes(glb)
    with pytest.raises(ConversionError) as err:
        MeshConverter().convert(tmp_path / "ext.glb", tmp_path, ConvertOptions(format="glb", filename="ext.glb"))
    assert err.value.code == "unsafe_reference"


@pytest.mark.parametrize(("uri", "ok"), [
    ("data:application/octet-stream;base64,AAAA", True),
    ("model.bin", True),
    ("textures/wood.png", True),
    ("my%20model.bin", True),
    ("/etc/shadow", False),
    ("../model.bin", False),
    ("textures/../../x.bin", False),
    ("%2e%2e/x.bin", False),
    ("file:///etc/shadow", False),
    ("http://169.254.169.254/latest", False),
    ("C:\\Windows\\x.bin", False),
    ("..\\x.bin", False),
    ("\\\\server\\share\\x.bin", False),
    (42, False),
])
def test_gltf_uri_rule(tmp_path, uri, ok):
    from conveyor_cad.mesh import unsafe_uri

    assert (unsafe_uri(uri, tmp_path) is None) is ok


def test_installed_trimesh_refuses_paths_outside_the_resolver_root(tmp_path, secret_file):
    """conveyor-cad pins trimesh>=5.0 (4.x read any absolute buffer URI; 5.0 refuses them and ../)."""
    import trimesh
    from trimesh.resolvers import FilePathResolver

    path, marker, tree = secret_file
    resolver = FilePathResolver(str(tmp_path / "model.gltf"))
    for name in (str(path), "../" * 16 + str(path).lstrip("/")):
        with pytest.raises(ValueError, match="escapes resolver root"):
            resolver.get(name)
    src = tmp_path / "model.gltf"
    src.write_bytes(_gltf_pointing_at(tree, str(path), path.stat().st_size))
    with pytest.raises(Exception) as err:
        trimesh.load(str(src), file_type="gltf", force="scene")
    assert marker.decode() not in str(err.value)
    project = tomllib.loads((ROOT / "plugins" / "conveyor-cad" / "pyproject.toml").read_text())["project"]
    pins = [req for req in project["dependencies"] if "trimesh" in req]
    assert pins == ["trimesh>=5.0"], pins


# ------------------------------------------------------------------ DXF block expansion


def minsert_bomb(rows=30000, cols=30000) -> bytes:
    """A DXF of a few hundred bytes: one MINSERT placing a one-line block rows x cols times (900 million lines)."""
    import ezdxf
    from ezdxf.lldxf.tagwriter import TagWriter

    doc = ezdxf.new("R12")
    doc.blocks.new("B").add_line((0, 0), (1, 0))
    insert = doc.modelspace().add_blockref("B", (0, 0)).grid(size=(rows, cols), spacing=(1, 1))
    out = io.StringIO()
    w = TagWriter(out, dxfversion=doc.dxfversion)
    w.write_str("999\nMINSERT bomb\n  0\nSECTION\n  2\nBLOCKS\n")
    block = doc.blocks.get("B")
    block.block.export_dxf(w)
    for e in block:
        e.export_dxf(w)
    block.endblk.export_dxf(w)
    w.write_str("  0\nENDSEC\n  0\nSECTION\n  2\nENTITIES\n")
    insert.export_dxf(w)
    w.write_str("  0\nENDSEC\n  0\nEOF\n")
    return out.getvalue().encode()


def test_a_minsert_bomb_fails_fast_naming_the_insert(tmp_path):
    from conveyor_cad.dxf import DxfConverter

    data = minsert_bomb()
    assert len(data) < 600
    src = tmp_path / "bomb.dxf"
    src.write_bytes(data)
    t0 = time.monotonic()
    with pytest.raises(ConversionError) as err:
        DxfConverter().convert(src, tmp_path, ConvertOptions(format="dxf", filename="bomb.dxf"))
    assert time.monotonic() - t0 < 1.0
    assert err.value.code == "conversion_failed"
    assert "more than 200000 entities" in err.value.message and "MINSERT 30000x30000" in err.value.message
    assert "at handle " in err.value.message


def test_a_minsert_bomb_fails_the_job_well_within_its_time_limit(cad_app, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_TIME_LIMIT", "60")
    t0 = time.monotonic()
    job, rec = _run(cad_app, minsert_bomb(), "bomb.dxf")
    assert rec.cad_format == "dxf"
    assert job.status.value == "failed" and job.error_code == "conversion_failed", job.last_error
    assert "MINSERT 30000x30000" in job.last_error and "time limit" not in job.last_error
    assert time.monotonic() - t0 < 30


def _nested(tmp_path, budget=None):
    import ezdxf

    doc = ezdxf.new()
    doc.blocks.new("LEAF").add_line((0, 0), (1, 0))
    mid = doc.blocks.new("MID")
    mid.add_blockref("LEAF", (0, 0)).grid(size=(100, 100), spacing=(1, 1))  # 10 000 lines
    doc.blocks.new("TOP").add_blockref("MID", (0, 0))
    for i in range(30):  # 30 plain INSERTs of TOP: 300 000 lines, none of them a MINSERT at the top level
        doc.modelspace().add_blockref("TOP", (i * 200, 0))
    p = tmp_path / "nested.dxf"
    doc.saveas(p)
    return p


def test_nested_inserts_count_against_the_budget(tmp_path):
    import ezdxf

    from conveyor_cad.dxf import DxfConverter, expanded_entities

    src = _nested(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(ConversionError, match=r"more than 200000 entities .*INSERT of block 'TOP'"):
        DxfConverter().convert(src, tmp_path, ConvertOptions(format="dxf", filename="nested.dxf"))
    assert time.monotonic() - t0 < 1.0
    doc = ezdxf.readfile(src)
    # 30 x (TOP: the MID insert + MID: the MINSERT + 10 000 lines): counted, not expanded
    assert expanded_entities(doc, doc.modelspace(), 400_000) == 30 * (1 + 1 + 10_000)


def test_a_block_that_contains_itself_is_refused(tmp_path):
    import ezdxf

    from conveyor_cad.dxf import expanded_entities

    doc = ezdxf.new()
    a = doc.blocks.new("A")
    b = doc.blocks.new("B")
    a.add_blockref("B", (0, 0))
    b.add_blockref("A", (1, 1))
    doc.modelspace().add_blockref("A", (0, 0))
    with pytest.raises(ConversionError, match="reference to itself"):
        expanded_entities(doc, doc.modelspace(), 1000)


# ------------------------------------------------------------------ crashes and what the box leaves


@pytest.mark.parametrize(("converter", "signal_name"), [("test.crash", "SIGSEGV"), ("test.abort", "SIGABRT")])
def test_a_converter_crash_in_the_box_fails_the_job_and_the_worker_goes_on(cad_app, meshes, converter, signal_name):
    """A native crash inside the conversion box is a clean ``conversion_failed``; the next job converts.

    No STEP file that segfaults the installed OpenCASCADE is known here, so the crash is
    the test converters' own: ``test.crash`` dereferences NULL through ctypes (SIGSEGV) and
    ``test.abort`` calls ``os.abort()`` (SIGABRT), both inside the conversion child, after
    printing to C-level stdout as a native reader would.
    """
    _box_or_skip(cad_app)
    bad = add_file(cad_app, meshes["box.off"], convert=False)
    good = add_file(cad_app, meshes["torus.ply"], convert=False)
    with CadPipeline(cad_app) as p:
        bad_id = cad_app.submit("cad.convert", {"file_id": bad.file.id, "converter": converter}, file_id=bad.file.id)
        (crashed,) = p.wait([bad_id], timeout=120)
        good_id = cad_app.submit("cad.convert", {"file_id": good.file.id}, file_id=good.file.id)
        (after,) = p.wait([good_id], timeout=120)
    assert crashed.status.value == "failed" and crashed.error_code == "conversion_failed" and crashed.attempts == 1
    assert f"died with {signal_name}" in crashed.last_error, crashed.last_error
    err = get_file(cad_app.engine, bad.file.id).conversion_error
    assert err["isolation"].startswith("sandbox:") and "native reader" in err["output"]
    assert after.status.value == "succeeded", after.last_error
    assert after.result["isolation"]["mode"].startswith("sandbox:")
    assert "unprivileged_uid" in after.result["isolation"]["enforced"]


@pytest.mark.parametrize(("converter", "words"), [
    ("test.symlink", "symlink"),
    ("test.forge", "refused"),
])
def test_files_the_box_leaves_are_read_back_without_following_links(cad_app, converter, words):
    """A converter (or an input that took it over) cannot make the worker publish a host file."""
    _box_or_skip(cad_app)
    job, rec = _run(cad_app, b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "tri.off", converter=converter)
    assert job.status.value == "failed" and job.error_code == "conversion_failed", job.last_error
    assert words in job.last_error, job.last_error
    assert rec.geometry_path is None
    for key in cad_app.storage.list(f"jobs/{job.id}"):
        assert b"root:" not in cad_app.storage.get(key)


def test_an_output_past_the_size_limit_is_refused(cad_app, monkeypatch):
    _box_or_skip(cad_app)
    monkeypatch.setenv("CONVEYOR_CAD_OUTPUT_MB", "2")
    job, _ = _run(cad_app, b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "tri.off", converter="test.big")
    assert job.status.value == "failed" and job.error_code == "conversion_failed"
    assert "larger than 2 MiB" in job.last_error, job.last_error


def test_the_conversion_box_sees_no_host_files():
    """From inside a conversion: no storage, no job database, nothing of /root, /home or /var, no /etc/shadow.

    The deployment keeps its database and storage outside /tmp (under /var/tmp here), as a
    real one does. The test converter ``test.walk`` lists / and walks everything but /usr,
    /proc and /sys, skipping only what the box is given on purpose: the Python installation
    and Conveyor's packages. Their parent directories exist in the box (Python may live in
    /root/.pyenv), but must hold nothing else; the box's /tmp holds only its own work
    directory and caches. Passes only with the sandbox's allow-list root (a box that showed
    the host tree read-only would list /home, /var, /root's files and the database).
    """
    base = Path(tempfile.mkdtemp(prefix="conveyor-walk-", dir="/var/tmp"))
    db = base / "cad.db"
    app = Conveyor(load_settings(env=cad_env(f"sqlite:///{db}", base)), plugins=load_plugins(TEST_PLUGINS))
    app.init_db()
    try:
        _box_or_skip(app)
        storage = base / "data"
        home = Path.home()
        probes = [str(db), str(storage), str(base), "/etc/shadow",
                  # the box's work directory may lie in a workspace under /run/conveyor-sandbox: only that path
                  # is in the box, never the uid locks beside it or the host's service sockets
                  "/run/conveyor-sandbox/uid-60000.lock", "/run/postgresql", "/var/run/postgresql",
                  str(ROOT / "pyproject.toml"),
                  str(ROOT / ".git"), *(str(home / n) for n in (".bashrc", ".profile", ".gitconfig", ".cache")
                                        if (home / n).exists())]
        # JSON with "asset" sniffs as glTF, so the forced converter gets it
        job, rec = _run(app, json.dumps({"asset": {"version": "2.0"}, "probe": probes}).encode(), "walk.gltf",
                        converter="test.walk")
        assert job.status.value == "succeeded", job.last_error
        seen = rec.attributes
        assert seen["uid"] != 0
        assert not any(seen["probes"].values()), seen["probes"]
        assert seen["shadow_readable"] is False
        cwd, bound = seen["cwd"], seen["bound"]
        box_dirs = [cwd, *bound]
        system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp"}
        top = set(seen["top"])
        assert top <= system | {Path(p).parts[1] for p in box_dirs}, top
        assert "home" not in top or any(p.startswith("/home/") for p in box_dirs), top

        def ancestor_of_a_box_dir(p):
            return any(b == p or b.startswith(p.rstrip("/") + "/") for b in box_dirs)

        box_root = os.path.dirname(cwd)  # the work directory's private parent
        leaked = []
        for p in seen["walked"]:
            if p.startswith(("/dev/", "/etc/")) or p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
                continue
            if p.startswith(("/tmp/matplotlib", "/tmp/cache", box_root + "/")) or ancestor_of_a_box_dir(p):
                continue
            leaked.append(p)
        assert not leaked, leaked[:30]
    finally:
        app.close()
        app.engine.dispose()
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ reporting


def test_doctor_reports_how_conversions_are_isolated(cad_app, monkeypatch):
    from conveyor_cad.diagnose import doctor

    sandbox = _box_or_skip(cad_app)
    checks = {c["check"]: c for c in doctor(cad_app)}
    assert checks["cad isolation"]["ok"] is True and sandbox.id in checks["cad isolation"]["detail"]
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", "fork")
    checks = {c["check"]: c for c in doctor(cad_app)}
    assert "WITHOUT a sandbox" in checks["cad isolation"]["detail"]
    assert checks["cad isolation"]["ok"] is (os.geteuid() != 0) and checks["cad isolation"]["next_step"]


def test_fallback_isolation_is_named_in_the_result(cad_app, meshes, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", "fork")
    job, _ = _run(cad_app, meshes["box.off"].read_bytes(), "box.off")
    assert job.status.value == "succeeded"
    assert job.result["isolation"] == {"mode": "fork", "enforced": ["rlimit_as", "rlimit_cpu", "wall_timer",
                                                                    "own_session"]}


def test_remove_tree_survives_a_deep_tree_and_planted_links(tmp_path):
    from conveyor_cad.box import remove_tree

    root = tmp_path / "box"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # deeper than the recursion limit and PATH_MAX
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.symlink(str(tmp_path / "keep"), "link", dir_fd=fd)
    os.close(fd)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file").write_text("kept")
    remove_tree(root)
    assert not root.exists() and (tmp_path / "keep" / "file").read_text() == "kept"


def test_without_a_sandbox_auto_falls_back_and_sandbox_refuses(tmp_path, monkeypatch, meshes):
    """A host with no sandbox for conversions: ``auto`` converts with ``fork`` and says so; ``sandbox`` refuses."""
    import conveyor_cad.box
    from conveyor_cad.isolation import Limits, run_converter
    from conveyor_cad.mesh import MeshConverter
    from conveyor_cad.routing import CadConfig

    monkeypatch.setattr(conveyor_cad.box, "choose_box", lambda registry=None, prefer=None: (None, "no namespaces"))
    opts = ConvertOptions(format="off", filename="box.off")
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", "auto")
    run = run_converter(MeshConverter(), meshes["box.off"], tmp_path / "auto", opts, Limits(60, 2048),
                        cfg=CadConfig.load())
    assert run.error is None and run.isolation == "fork" and "rlimit_as" in run.enforced
    monkeypatch.setenv("CONVEYOR_CAD_ISOLATION", "sandbox")
    run = run_converter(MeshConverter(), meshes["box.off"], tmp_path / "required", opts, Limits(60, 2048),
                        cfg=CadConfig.load())
    assert run.output is None and run.error.code == "sandbox_error" and run.error.retryable
    assert "no namespaces" in run.error.message
