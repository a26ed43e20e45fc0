"""Every first-party language: A+B, wrong answer, compile error, runtime error, time and memory limits."""

from __future__ import annotations

import pytest

from conveyor_judge.languages import FIRST_PARTY
from conveyor_judge.selftest import EXPECTED, has_program, program
from conveyor_judge.testing import JudgeContract
from conveyor_judge.verdicts import Verdict

LANGS = ["c", "cpp", "python3", "java", "rust", "javascript"]
CASES = [(lang, name) for lang in LANGS for name in EXPECTED if has_program(lang, name)]


def test_every_first_party_language_has_all_six_programs():
    assert len(CASES) == 6 * len(LANGS)
    assert {lang.id for lang in FIRST_PARTY} >= set(LANGS) | {"cpp20"}


@pytest.mark.parametrize("lang,name", CASES, ids=[f"{lang}-{name}" for lang, name in CASES])
def test_program_gets_its_verdict(judge, aplusb, lang, name):
    res = judge.judge(aplusb, lang, program(lang, name).encode())
    want = EXPECTED[name]
    assert res.verdict is want, res.as_dict()
    d = res.as_dict()
    assert d["verdict"] == want.value and d["language"] == lang and d["problem_id"] == aplusb.id
    if want is Verdict.COMPILE_ERROR:
        assert d["tests"] == [] and d["compile"]["output"] and not d["compile"]["ok"]
        return
    assert d["compile"]["ok"]
    row = d["tests"][-1]
    # the default feedback (verdict+time): no output preview, no checker message
    assert set(row) >= {"verdict", "time_ms", "memory_kib", "exit_code", "signal", "message"}
    assert "output_preview" not in row and d["feedback"] == "verdict+time"
    if want is Verdict.ACCEPTED:
        assert [t["verdict"] for t in d["tests"]] == ["accepted"] * 3 and d["score"] == 3
    else:
        assert len(d["tests"]) == 1, "judging stops at the first failing test"
    if want is Verdict.TIME_LIMIT_EXCEEDED:
        lim = judge.limits_for(aplusb, judge.language(lang))[0]
        # on a busy host the wall limit (2 x cpu + 1 s) may come first
        assert row["time_ms"] >= lim.cpu_ms * 0.9 or "wall time limit" in row["message"], row
    if want is Verdict.RUNTIME_ERROR:
        assert row["exit_code"] not in (0, None) or row["signal"]


def test_cpp_alias_1_and_cpp20(judge, aplusb):
    assert judge.language("1").id == "cpp" and judge.language("C++").id == "cpp"
    src = "#include <iostream>\n#include <span>\nint main(){long long a[2];std::cin>>a[0]>>a[1];" \
          "std::span<long long> s(a, 2);std::cout<<s[0]+s[1]<<'\\n';}"
    assert judge.judge(aplusb, "cpp20", src.encode()).verdict is Verdict.ACCEPTED
    assert judge.judge(aplusb, "cpp", src.encode()).verdict is Verdict.COMPILE_ERROR


def test_language_from_file_extension(judge):
    assert judge.language_for_file("sol.cc").id == "cpp" and judge.language_for_file("Main.java").id == "java"
    assert judge.language_for_file("a.py").id == "python3" and judge.language_for_file("x.rs").id == "rust"
    from conveyor_judge.errors import JudgeError
    with pytest.raises(JudgeError) as exc:
        judge.language_for_file("notes.txt")
    assert exc.value.code == "unknown_language" and "--language" in exc.value.message
    with pytest.raises(JudgeError) as exc:
        judge.language("cobol")
    assert exc.value.code == "unknown_language" and "python3" in exc.value.message


def test_run_all_tests_scores_each_test(judge, store):
    from conveyor_judge.selftest import aplusb_package
    pkg = aplusb_package("run_all_tests = true\npoints = 10\n", tests=((1, 2), (0, 0), (5, 6)))
    problem = store.load(store.add(pkg).id)
    # right only when a + b is odd: tests 1 and 3
    src = "a, b = map(int, input().split())\nprint(a + b if (a + b) % 2 else 1)\n"
    res = judge.judge(problem, "python3", src.encode())
    assert [t.verdict for t in res.tests] == [Verdict.ACCEPTED, Verdict.WRONG_ANSWER, Verdict.ACCEPTED]
    assert res.verdict is Verdict.WRONG_ANSWER and res.score == 20 and res.max_score == 30


def test_missing_toolchain_is_language_unavailable_not_a_crash(judge, aplusb):
    from dataclasses import replace

    from conveyor_judge.engine import Judge
    from conveyor_judge.errors import JudgeError
    ghost = replace(judge.language("c"), id="ghost", tools=("no-such-compiler-xyz",))
    ok, why = ghost.available()
    assert not ok and "no-such-compiler-xyz not found" in why
    j = Judge(sandbox=judge.sandbox, languages=[ghost], checkers=judge.checkers.values(), root=judge.root)
    with pytest.raises(JudgeError) as exc:
        j.judge(aplusb, "ghost", b"int main(){}")
    assert exc.value.code == "language_unavailable"


def _contract(lang: str) -> type[JudgeContract]:
    return type(f"Test{lang.title()}Contract", (JudgeContract,), {
        "language": lang, "aplusb": program(lang, "aplusb"), "wrong": program(lang, "wa"),
        "compile_error": program(lang, "ce")})


TestCContract = _contract("c")
TestCppContract = _contract("cpp")
TestPython3Contract = _contract("python3")
TestJavaContract = _contract("java")
TestRustContract = _contract("rust")
TestJavascriptContract = _contract("javascript")
