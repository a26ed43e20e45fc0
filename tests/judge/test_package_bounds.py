"""Hostile problem packages: every bound refused with a catalog code and a one-line reason, never a traceback."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conveyor_judge.errors import JudgeError
from conveyor_judge.problems import ProblemStore, zip_directory
from tests.judge.conftest import make_zip

TESTS = {"1.in": "1 2\n", "1.out": "3\n"}


def _refused(store: ProblemStore, data: bytes) -> JudgeError:
    with pytest.raises(JudgeError) as exc:
        store.add(data)
    return exc.value


def many_folders(members: int = 9990, depth: int = 21) -> bytes:
    """Each member under its own chain of folders: 9,990 members made 209,792 directories."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in TESTS.items():
            zf.writestr(name, data)
        for i in range(members):
            zf.writestr("/".join(f"m{i}d{j}" for j in range(depth)) + "/x", "")
    return buf.getvalue()


def bzip2_bomb(mib: int = 64) -> bytes:
    """A bzip2 member expanding far past what deflate can: 64 MiB of zeros in a few hundred bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as zf:
        for name, data in TESTS.items():
            zf.writestr(name, data)
        with zf.open("big.txt", "w") as f:
            for _ in range(mib):
                f.write(bytes(1 << 20))
    return buf.getvalue()


def overlapping() -> bytes:
    """Two central directory entries sharing one member's compressed data (the non-recursive zip bomb)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1.in", "1 2\n" * 1000)
        zf.writestr("1.out", "3\n" * 2000)
    raw = bytearray(buf.getvalue())
    second = raw.find(b"PK\x01\x02", raw.find(b"PK\x01\x02") + 4)
    raw[second + 42:second + 46] = (0).to_bytes(4, "little")  # 1.out's data "is" 1.in's
    return bytes(raw)


def symlink_dir_entry() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in TESTS.items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("tests/")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc")
    return buf.getvalue()


#: name → (package, code, words the one-line message must hold)
CASES: dict[str, tuple[bytes, str, tuple[str, ...]]] = {
    "209792-folders": (many_folders(), "problem_package_too_large", ("folders", "CONVEYOR_JUDGE_MAX_DIRS")),
    "name-past-255-bytes": (make_zip(TESTS | {"é" * 130 + ".txt": "x"}), "invalid_problem_package",
                            ("255 bytes", "shorten")),
    "2100-deep": (make_zip(TESTS | {"d/" * 2100 + "x": "x"}), "invalid_problem_package",
                  ("2101 levels deep", "CONVEYOR_JUDGE_MAX_DEPTH")),
    "long-path": (make_zip(TESTS | {"/".join(["n" * 200] * 6) + "/x": "x"}), "invalid_problem_package",
                  ("longer than 1024 bytes",)),
    "file-and-folder": (make_zip(TESTS | {"tests": "x", "tests/2.in": "1", "tests/2.out": "1"}),
                        "invalid_problem_package", ("'tests' is both a file and a folder", "rename")),
    "file-and-folder-entry": (make_zip(TESTS | {"1.in/": ""}), "invalid_problem_package",
                              ("both a file and a folder",)),
    "timelimit-inf": (make_zip({"data/secret/1.in": "1", "data/secret/1.ans": "1", ".timelimit": "inf\n"}),
                      "invalid_problem_package", (".timelimit", "not a finite number", "1 to 60000 ms")),
    "timelimit-negative": (make_zip({"data/secret/1.in": "1", "data/secret/1.ans": "1", ".timelimit": "-2"}),
                           "invalid_problem_package", (".timelimit", "out of range")),
    "yaml-time-1e400": (make_zip({"data/secret/1.in": "1", "data/secret/1.ans": "1",
                                  "problem.yaml": "limits:\n  time_limit: 1e400\n"}),
                        "invalid_problem_package", ("limits.time_limit", "not a finite number")),
    "yaml-memory-negative": (make_zip({"data/secret/1.in": "1", "data/secret/1.ans": "1",
                                       "problem.yaml": "limits:\n  memory: -64\n"}),
                             "invalid_problem_package", ("limits.memory", "1 to 4096 MiB")),
    "yaml-tolerance-text": (make_zip({"data/secret/1.in": "1", "data/secret/1.ans": "1",
                                      "problem.yaml": "validator_flags: float_tolerance lots\n"}),
                            "invalid_problem_package", ("float_tolerance", "should be a number")),
    "time-2^63-1": (make_zip(TESTS | {"problem.toml": "time_limit_ms = 9223372036854775807\n"}),
                    "invalid_problem_package", ("time_limit_ms", "out of range", "1 to 60000 ms")),
    "memory-negative": (make_zip(TESTS | {"problem.toml": "memory_limit_mib = -256\n"}),
                        "invalid_problem_package", ("memory_limit_mib", "1 to 4096 MiB")),
    "output-1-tib": (make_zip(TESTS | {"problem.toml": "output_limit_kib = 1073741824\n"}),
                     "invalid_problem_package", ("output_limit_kib", "1 to 65536 KiB")),
    "tolerance-nan": (make_zip(TESTS | {"problem.toml": "float_abs_tol = nan\n"}), "invalid_problem_package",
                      ("float_abs_tol", "not a finite number")),
    "points-inf": (make_zip(TESTS | {"problem.toml": "points = inf\n"}), "invalid_problem_package",
                   ("points", "not a finite number")),
    "test-file-as-checker": (make_zip(TESTS | {"problem.toml": "checker_source = '1.in'\n"}),
                             "invalid_problem_package", ("checker_source '1.in'", "not the source")),
    "unknown-checker-id": (make_zip(TESTS | {"problem.toml": "checker = 'nonesuch'\n"}), "invalid_problem_package",
                           ("'nonesuch' is not registered", "standard")),
    "bzip2-bomb": (bzip2_bomb(), "problem_package_too_large", ("CONVEYOR_JUDGE_MAX_RATIO",)),
    "overlapping-members": (overlapping(), "problem_package_too_large", ("share compressed data",)),
    "symlink-folder": (symlink_dir_entry(), "unsafe_problem_package", ("symbolic link",)),
    "backslash-dotdot": (make_zip(TESTS | {"..\\..\\evil.txt": "x"}), "unsafe_problem_package", ("'..'",)),
    "toml-too-deep": (make_zip(TESTS | {"problem.toml": "name = " + "[" * 5000 + "]" * 5000 + "\n"}),
                      "invalid_problem_package", ("problem.toml",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_hostile_package_is_refused_with_its_code(store, case):
    data, code, words = CASES[case]
    leftovers = set(os.listdir(store.root / "problems"))
    t0 = time.monotonic()
    err = _refused(store, data)
    assert time.monotonic() - t0 < 10, "refused from the listing, before unpacking"
    assert err.code == code, err.message
    for w in words:
        assert w in err.message, err.message
    assert "\n" not in err.message and len(err.message) < 600
    # nothing half-unpacked stays in the cache
    assert {n for n in os.listdir(store.root / "problems") if not n.endswith(".lock")} <= leftovers


def test_limits_at_their_documented_bounds_are_accepted(store):
    ok = make_zip(TESTS | {"problem.toml": "time_limit_ms = 60000\nmemory_limit_mib = 4096\n"
                                           "output_limit_kib = 65536\nfloat_abs_tol = 0\n"})
    problem = store.load(store.add(ok).id)
    assert (problem.time_limit_ms, problem.memory_limit_mib, problem.output_limit_kib) == (60000, 4096, 65536)
    kattis = make_zip({"data/secret/1.in": "1", "data/secret/1.ans": "1", ".timelimit": "0.5\n"})
    assert store.load(store.add(kattis).id).time_limit_ms == 500


def test_overrides_out_of_range_are_refused(store):
    data = make_zip(TESTS)
    for kw in ({"time_limit_ms": 0}, {"time_limit_ms": 2 ** 63 - 1}, {"memory_limit_mib": -1},
               {"feedback": "everything"}):
        with pytest.raises(JudgeError) as exc:
            store.add(data, **kw)
        assert exc.value.code == "invalid_problem_package", kw


def test_a_deep_directory_is_refused_by_zip_directory_without_recursion(tmp_path):
    from conveyor_sandbox.cleanup import remove_tree
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(2100):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    (top / "1.in").write_text("1")
    try:
        with pytest.raises(JudgeError) as exc:
            zip_directory(top)
        assert exc.value.code == "invalid_problem_package" and "CONVEYOR_JUDGE_MAX_DEPTH" in exc.value.message
    finally:
        remove_tree(top)  # pytest's own clean-up of tmp_path would recurse 2,100 levels


def test_a_fifo_in_a_directory_is_refused_not_read(tmp_path):
    (tmp_path / "1.in").write_text("1")
    os.mkfifo(tmp_path / "1.out")
    with pytest.raises(JudgeError) as exc:
        zip_directory(tmp_path)
    assert exc.value.code == "unsafe_problem_package" and "not a regular file" in exc.value.message


def test_unpacked_packages_and_stored_zips_are_private(tmp_path, judge):
    from conveyor.storage import Storage
    from conveyor_judge.selftest import aplusb_package
    store = ProblemStore(Storage(f"file://{tmp_path}/data"), judge.root)
    info = store.add(aplusb_package(extra={"tests/extra/2.in": "1 1\n", "tests/extra/2.out": "2\n"}))
    problem = store.load(info.id)
    base = judge.root / "problems" / info.sha256
    for p in [base, *base.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(p).st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert stat.S_IMODE(os.stat(judge.root / "problems").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.storage.path(f"problems/{info.sha256}.zip")).st_mode) == 0o600
    assert problem.tests[0].input.is_relative_to(base)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", ["209792-folders", "2100-deep", "name-past-255-bytes", "file-and-folder",
                                  "timelimit-inf", "yaml-time-1e400", "time-2^63-1", "memory-negative",
                                  "test-file-as-checker", "bzip2-bomb"])
def test_problem_add_prints_one_line_and_fails(env, tmp_path, case):
    path = tmp_path / "bad.zip"
    path.write_bytes(CASES[case][0])
    full = dict(os.environ)
    full.update({k: v for k, v in env.items() if k != "CONVEYOR_PLUGINS"})
    r = subprocess.run([sys.executable, "-m", "conveyor", "judge", "problem", "add", str(path)], env=full,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {CASES[case][1]}: "), r.stderr
    assert "Traceback" not in r.stderr


def test_cli_limit_options_follow_the_documented_ranges(tmp_path):
    from click.testing import CliRunner

    from conveyor_judge.cli import judge as judge_cli
    path = Path(tmp_path / "p.zip")
    path.write_bytes(make_zip(TESTS))
    r = CliRunner().invoke(judge_cli, ["problem", "add", str(path), "--time-limit", "600000"])
    assert r.exit_code == 2 and "60000" in r.output
