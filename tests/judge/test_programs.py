"""Checker and interactor programs from the package: testlib and Kattis protocols, interactive problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor_judge.selftest import aplusb_package, program
from conveyor_judge.verdicts import Verdict
from tests.judge.conftest import make_zip

PROGRAMS = Path(__file__).parent / "programs"


def src(name: str) -> str:
    return (PROGRAMS / name).read_text()


@pytest.fixture(scope="module")
def testlib_problem(store):
    pkg = aplusb_package("checker = 'testlib'\nchecker_source = 'checker/sum_checker.c'\nrun_all_tests = true\n",
                         {"checker/sum_checker.c": src("sum_checker.c")}, tests=((1, 2), (20, 22)))
    return store.load(store.add(pkg).id)


C_PRINT = '#include <stdio.h>\nint main(void){long long a,b;scanf("%%lld %%lld",&a,&b);printf(%s);return 0;}'


@pytest.mark.parametrize("expr,want,score", [
    ('"%lld\\n", a + b', Verdict.ACCEPTED, 2.0),
    ('"%lld\\n", a + b + 5', Verdict.WRONG_ANSWER, 0.0),
    ('"%lld %lld\\n", a + b, a', Verdict.PRESENTATION_ERROR, 0.0),
    ('"%lld\\n", a + b + 1', Verdict.WRONG_ANSWER, 1.0),  # exit 7 "points 0.5" on each test
])
def test_testlib_checker_protocol(judge, testlib_problem, expr, want, score):
    res = judge.judge(testlib_problem, "c", (C_PRINT % expr).encode())
    assert res.verdict is want, res.as_dict()
    assert res.score == score and len(res.tests) == 2
    if score == 1.0:
        assert all(t.score == 0.5 and "off by one" in t.message for t in res.tests)


def test_checker_exit_3_is_system_error(judge, store):
    pkg = aplusb_package("checker = 'testlib'\nchecker_source = 'c.c'\n", {"c.c": program("c", "check_fail")})
    res = judge.judge(store.load(store.add(pkg).id), "c", program("c", "aplusb").encode())
    assert res.verdict is Verdict.SYSTEM_ERROR and "cannot open the answer" in res.tests[0].message


def test_checker_that_does_not_compile_fails_the_job_with_a_code(judge, store):
    from conveyor_judge.errors import JudgeError
    pkg = aplusb_package("checker_source = 'check.c'\n", {"check.c": "int main( {"})
    with pytest.raises(JudgeError) as exc:
        judge.judge(store.load(store.add(pkg).id), "c", program("c", "aplusb").encode())
    assert exc.value.code == "checker_compile_failed" and "check.c" in exc.value.message


def test_kattis_package_with_output_validator(judge, store):
    files = {"problem.yaml": "name: Sum\nvalidation: custom\n",
             "data/sample/1.in": "1 2\n", "data/sample/1.ans": "3\n",
             "data/secret/1.in": "40 2\n", "data/secret/1.ans": "42\n",
             "output_validators/v/sum_validator.c": src("sum_validator.c")}
    problem = store.load(store.add(make_zip(files)).id)
    ok = judge.judge(problem, "python3", program("python3", "aplusb").encode())
    assert ok.verdict is Verdict.ACCEPTED and ok.score == 5.0  # score.txt 2.5 per test
    assert ok.tests[0].message == "correct sum"
    bad = judge.judge(problem, "python3", program("python3", "wa").encode())
    assert bad.verdict is Verdict.WRONG_ANSWER and bad.tests[0].message == "wrong sum"


def _guess_problem(store, protocol: str):
    inter = src("guess_interactor.c")
    if protocol == "kattis":
        inter = "#define KATTIS 1\n" + inter
    files = {"1.in": "1\n", "2.in": "777777777\n", "3.in": "1000000000\n", "interactor.c": inter,
             "problem.toml": f"time_limit_ms = 1000\ninteractor_protocol = '{protocol}'\n"}
    return store.load(store.add(make_zip(files)).id)


@pytest.fixture(scope="module")
def guess_testlib(store):
    return _guess_problem(store, "testlib")


@pytest.mark.parametrize("name,want", [
    ("guess_ok.c", Verdict.ACCEPTED),
    ("guess_wrong.c", Verdict.WRONG_ANSWER),
    ("guess_early.c", Verdict.WRONG_ANSWER),
    ("guess_noflush.c", Verdict.TIME_LIMIT_EXCEEDED),
])
def test_interactive_guessing_testlib(judge, guess_testlib, name, want):
    import time
    t0 = time.monotonic()
    res = judge.judge(guess_testlib, "c", src(name).encode())
    assert res.verdict is want, res.as_dict()
    assert time.monotonic() - t0 < 30, "an interactive run must never hang"
    if name == "guess_ok.c":
        assert len(res.tests) == 3 and "guesses" in res.tests[0].message
    if name == "guess_wrong.c":
        # the submission died of SIGPIPE after the interactor gave up: the interactor's verdict stands
        assert res.tests[0].signal == 13 and "30 guesses" in res.tests[0].message
    if name == "guess_noflush.c":
        assert "wall time" in res.tests[0].message


def test_interactive_guessing_kattis_protocol(judge, store):
    problem = _guess_problem(store, "kattis")
    assert judge.judge(problem, "c", src("guess_ok.c").encode()).verdict is Verdict.ACCEPTED
    assert judge.judge(problem, "c", src("guess_early.c").encode()).verdict is Verdict.WRONG_ANSWER


def test_interactive_python_submission(judge, guess_testlib):
    py = ("lo, hi = 1, 10**9\nwhile True:\n    m = (lo + hi) // 2\n    print(m, flush=True)\n"
          "    r = input().strip()\n    if r == '=':\n        break\n"
          "    lo, hi = (m + 1, hi) if r == '>' else (lo, m - 1)\n")
    assert judge.judge(guess_testlib, "python3", py.encode()).verdict is Verdict.ACCEPTED


def test_kattis_interactive_package(judge, store):
    files = {"problem.yaml": "name: Guess\nvalidation: custom interactive\n",
             "data/sample/1.in": "42\n", "data/secret/1.in": "999999999\n",
             "output_validators/guess/guess.c": "#define KATTIS 1\n" + src("guess_interactor.c")}
    problem = store.load(store.add(make_zip(files)).id)
    assert problem.interactive and problem.interactor_protocol == "kattis" and len(problem.tests) == 2
    ok = judge.judge(problem, "c", src("guess_ok.c").encode())
    assert ok.verdict is Verdict.ACCEPTED and len(ok.tests) == 2
    assert judge.judge(problem, "c", src("guess_wrong.c").encode()).verdict is Verdict.WRONG_ANSWER


def test_interactor_tout_goes_to_the_testlib_checker(judge, store):
    files = {"1.in": "500000000\n", "2.in": "1\n", "interactor.c": src("guess_interactor.c"),
             "check.c": src("guess_checker.c")}
    problem = store.load(store.add(make_zip(files)).id)
    assert problem.interactive and problem.checker == "testlib"
    res = judge.judge(problem, "c", src("guess_ok.c").encode())
    # 500000000 is the first guess; 1 takes about 30 guesses, more than this checker allows
    assert res.verdict is Verdict.WRONG_ANSWER, res.as_dict()
    assert res.tests[0].verdict is Verdict.ACCEPTED and res.tests[0].message == "checker: 1 guesses"
    assert "at most 12 allowed" in res.tests[1].message


def test_checker_includes_a_header_shipped_beside_it(judge, store):
    header = "static int verdict_for(long long out, long long ans) { return out == ans ? 0 : 1; }\n"
    checker = ('#include <stdio.h>\n#include "sumlib.h"\n'
               'int main(int c, char **v) { long long o = 0, a = 0;\n'
               '  FILE *fo = fopen(v[2], "r"), *fa = fopen(v[3], "r");\n'
               '  if (!fo || !fa || fscanf(fa, "%lld", &a) != 1) return 3; if (fscanf(fo, "%lld", &o) != 1) return 2;\n'
               '  return verdict_for(o, a); }\n')
    files = {"1.in": "2 2\n", "1.out": "4\n", "checker/check.c": checker, "checker/sumlib.h": header,
             "problem.toml": "checker_source = 'checker/check.c'\n"}
    problem = store.load(store.add(make_zip(files)).id)
    assert judge.judge(problem, "c", program("c", "aplusb").encode()).verdict is Verdict.ACCEPTED
    assert judge.judge(problem, "c", program("c", "wa").encode()).verdict is Verdict.WRONG_ANSWER
