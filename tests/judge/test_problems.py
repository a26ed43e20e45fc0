"""Problem packages: layouts, limits, and hostile archives rejected with their codes."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from conveyor_judge.errors import JudgeError
from conveyor_judge.problems import ProblemStore, UnpackLimits, zip_directory
from tests.judge.conftest import make_zip


def _code(store: ProblemStore, data: bytes) -> JudgeError:
    with pytest.raises(JudgeError) as exc:
        store.add(data)
    return exc.value


def test_plain_package_pairs_in_with_out_or_ans_in_natural_order(store):
    files = {"2.in": "2", "2.ans": "2", "10.in": "10", "10.out": "10", "1.in": "1", "1.out": "1"}
    problem = store.load(store.add(make_zip(files)).id)
    assert [t.name for t in problem.tests] == ["1", "2", "10"]
    assert [t.answer.name for t in problem.tests] == ["1.out", "2.ans", "10.out"]
    assert problem.format == "plain" and problem.checker == "standard" and problem.time_limit_ms == 1000


def test_tests_in_subfolders_and_a_wrapping_folder_are_found(store):
    files = {"prob/tests/group1/1.in": "a", "prob/tests/group1/1.out": "a", "prob/tests/group2/1.in": "b",
             "prob/tests/group2/1.out": "b", "prob/problem.toml": "time_limit_ms = 2500\nmemory_limit_mib = 32\n"}
    problem = store.load(store.add(make_zip(files)).id)
    assert [t.name for t in problem.tests] == ["tests/group1/1", "tests/group2/1"]
    assert problem.time_limit_ms == 2500 and problem.memory_limit_mib == 32


def test_same_bytes_same_id_and_limit_overrides_are_kept(store):
    data = make_zip({"1.in": "x", "1.out": "x", "note.txt": "override"})
    a = store.add(data)
    b = store.add(data, time_limit_ms=3000, memory_limit_mib=512)
    assert a.id == b.id == a.sha256[:12]
    problem = store.load(a.id)
    assert problem.time_limit_ms == 3000 and problem.memory_limit_mib == 512
    assert store.storage.exists(f"problems/{a.sha256}.zip")


def test_a_package_without_tests_is_rejected(store):
    err = _code(store, make_zip({"statement.txt": "no tests here"}))
    assert err.code == "invalid_problem_package" and "no test case" in err.message


def test_a_missing_expected_output_is_rejected_naming_the_file(store):
    err = _code(store, make_zip({"1.in": "1", "1.out": "1", "2.in": "2"}))
    assert err.code == "invalid_problem_package" and "2.in" in err.message and "2.out" in err.message


def test_not_a_zip_is_rejected(store):
    assert _code(store, b"PK\x03\x04 not really").code == "invalid_problem_package"


@pytest.mark.parametrize("name", ["../evil.in", "a/../../evil.in", "/etc/cron.d/evil", "C:/evil.in"])
def test_zip_slip_and_absolute_paths_are_rejected(store, name):
    err = _code(store, make_zip({"1.in": "1", "1.out": "1", name: "pwned"}))
    assert err.code == "unsafe_problem_package"
    assert name in err.message


def test_symlink_member_is_rejected(store):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("1.in", "1")
        link = zipfile.ZipInfo("1.out")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/shadow")
    err = _code(store, buf.getvalue())
    assert err.code == "unsafe_problem_package" and "symbolic link" in err.message


def test_zip_bomb_is_rejected_before_filling_the_disk(store):
    buf = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("1.in", "1")
        with zf.open("1.out", "w", force_zip64=True) as f:
            for _ in range(300):  # 300 MiB of zeros, about 300 KiB zipped
                f.write(chunk)
    assert len(buf.getvalue()) < 2 << 20
    err = _code(store, buf.getvalue())
    assert err.code == "problem_package_too_large" and "CONVEYOR_JUDGE_MAX_UNPACKED_MB" in err.message


def test_a_bomb_whose_header_lies_about_its_size_is_stopped_while_unpacking(store, tmp_path):
    from conveyor_judge.problems import safe_unpack
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("1.in", b"x" * 4096)
    raw = bytearray(buf.getvalue())
    # shrink the central directory's uncompressed size of the one member to 16 bytes
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (16).to_bytes(4, "little")
    with pytest.raises(JudgeError) as exc:
        safe_unpack(bytes(raw), tmp_path / "out", UnpackLimits(max_files=10, max_bytes=1024))
    assert exc.value.code in ("problem_package_too_large", "invalid_problem_package")
    assert not (tmp_path / "out" / "1.in").exists() or (tmp_path / "out" / "1.in").stat().st_size <= 1024


def test_too_many_files_is_rejected(store):
    small = ProblemStore(store.storage, store.root, UnpackLimits(max_files=20, max_bytes=1 << 20))
    files = {f"{i}.in": "1" for i in range(15)} | {f"{i}.out": "1" for i in range(15)}
    with pytest.raises(JudgeError) as exc:
        small.add(make_zip(files))
    assert exc.value.code == "problem_package_too_large" and "entries" in exc.value.message


def test_problem_toml_typos_are_named(store):
    err = _code(store, make_zip({"1.in": "1", "1.out": "1", "problem.toml": "time_limit = 5\n"}))
    assert err.code == "invalid_problem_package" and "time_limit" in err.message and "time_limit_ms" in err.message
    err = _code(store, make_zip({"1.in": "1", "1.out": "1", "problem.toml": "time_limit_ms = 'fast'\n"}))
    assert "should be a int" in err.message


def test_unknown_problem_id_is_problem_not_found(store):
    with pytest.raises(JudgeError) as exc:
        store.load("0123456789ab")
    assert exc.value.code == "problem_not_found"
    with pytest.raises(JudgeError) as exc:
        store.load("../../etc")
    assert exc.value.code == "problem_not_found"


def test_kattis_layout_reads_samples_secret_limits_and_validator(store):
    files = {
        "problem.yaml": "name: Sum\nvalidation: custom\nlimits:\n  memory: 128\n",
        ".timelimit": "2\n",
        "data/sample/1.in": "1 2\n", "data/sample/1.ans": "3\n",
        "data/secret/g1/big.in": "5 5\n", "data/secret/g1/big.ans": "10\n",
        "output_validators/sum_validator/validate.c": "int main(void){return 42;}\n",
        "input_validators/iv/check.py": "print('ignored')\n",
    }
    problem = store.load(store.add(make_zip(files)).id)
    assert problem.format == "kattis" and problem.name == "Sum"
    assert [t.name for t in problem.tests] == ["data/sample/1", "data/secret/g1/big"]
    assert problem.memory_limit_mib == 128 and problem.time_limit_ms == 2000
    assert problem.checker == "kattis" and problem.checker_source.name == "validate.c"


def test_kattis_float_tolerance_flag_selects_the_floats_checker(store):
    files = {"problem.yaml": "validator_flags: float_tolerance 1e-4\n",
             "data/secret/1.in": "x", "data/secret/1.ans": "1.0"}
    problem = store.load(store.add(make_zip(files)).id)
    assert problem.checker == "floats" and problem.float_abs_tol == problem.float_rel_tol == 1e-4


def test_directory_with_a_symlink_is_refused_by_zip_directory(tmp_path):
    (tmp_path / "1.in").write_text("1")
    (tmp_path / "1.out").symlink_to("/etc/passwd")
    with pytest.raises(JudgeError) as exc:
        zip_directory(tmp_path)
    assert exc.value.code == "unsafe_problem_package"
