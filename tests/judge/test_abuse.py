"""Hostile submissions: compiler abuse, peeking at the answers, tampering with the input."""

from __future__ import annotations

import time

import pytest

from conveyor_judge.selftest import aplusb_package
from conveyor_judge.verdicts import Verdict

SECRET = "918273645546372819"


@pytest.fixture(scope="module")
def secret_problem(store):
    """A+B whose expected output is a distinctive number; the package sits in the judge's private cache."""
    return store.load(store.add(aplusb_package(tests=((918273645546372818, 1),))).id)


def _c(judge, problem, source: str):
    return judge.judge(problem, "c", source.encode())


def test_include_dev_urandom_is_a_compile_error_with_the_reason(judge, aplusb, monkeypatch):
    monkeypatch.setenv("CONVEYOR_JUDGE_COMPILE_TIME_MS", "3000")
    monkeypatch.setenv("CONVEYOR_JUDGE_COMPILE_MEMORY_MIB", "256")
    t0 = time.monotonic()
    res = _c(judge, aplusb, '#include "/dev/urandom"\nint main(void){return 0;}\n')
    assert res.verdict is Verdict.COMPILE_ERROR and res.tests == ()
    assert time.monotonic() - t0 < 20
    # the preprocessor reads forever: stopped by the cpu or the memory limit, which the message names
    assert "compilation" in res.compile.message or "MiB" in res.compile.message, res.compile.as_dict()


def test_template_blow_up_hits_the_compile_time_limit(judge, aplusb, monkeypatch):
    monkeypatch.setenv("CONVEYOR_JUDGE_COMPILE_TIME_MS", "2000")
    # 176,400 distinct instantiations under the depth limit: about 3.5 s of g++ on an idle core
    source = """
template <int N, int M> struct A { static const unsigned long long v = A<N - 1, M>::v * 3 + A<N, M - 1>::v; };
template <int N> struct A<N, 0> { static const unsigned long long v = N; };
template <int M> struct A<0, M> { static const unsigned long long v = M; };
int main() { return (int)(A<420, 420>::v & 1); }
"""
    t0 = time.monotonic()
    res = judge.judge(aplusb, "cpp", source.encode())
    assert res.verdict is Verdict.COMPILE_ERROR and res.tests == ()
    assert time.monotonic() - t0 < 20
    assert res.compile.message.startswith("compilation"), res.compile.as_dict()


def test_error_flood_is_capped_in_the_result(judge, aplusb):
    source = "int main(void){\n" + "".join(f"  undefined_{i} = {i};\n" for i in range(5000)) + "}\n"
    res = _c(judge, aplusb, source)
    assert res.verdict is Verdict.COMPILE_ERROR
    assert 1000 < len(res.compile.output) <= 16 * 1024 + 200 and "truncated" in res.compile.output


def test_reading_test_data_at_compile_time_fails(judge, secret_problem):
    answer = secret_problem.tests[0].answer
    res = _c(judge, secret_problem, f'#include "{answer}"\nint main(void){{return 0;}}\n')
    assert res.verdict is Verdict.COMPILE_ERROR
    assert SECRET not in res.compile.output


def test_a_submission_cannot_read_the_expected_output(judge, secret_problem):
    answer = secret_problem.tests[0].answer
    source = f"""
#include <stdio.h>
int main(void) {{
    const char *paths[] = {{"{answer}", "1.out", "../1.out", "/proc/1/cwd/1.out"}};
    char buf[64] = {{0}};
    for (int i = 0; i < 4; i++) {{
        FILE *f = fopen(paths[i], "r");
        if (f && fgets(buf, sizeof buf, f)) {{ fputs(buf, stdout); return 0; }}
    }}
    puts("0");
    return 0;
}}
"""
    res = _c(judge, secret_problem, source)
    assert res.verdict is Verdict.WRONG_ANSWER, res.as_dict()
    assert SECRET not in res.tests[0].output_preview


def test_a_submission_cannot_change_the_input_the_checker_sees(judge, store):
    from pathlib import Path
    checker = (Path(__file__).parent / "programs" / "sum_checker.c").read_text()
    pkg = aplusb_package("checker_source = 'check.c'\n", {"check.c": checker}, tests=((2, 3),))
    problem = store.load(store.add(pkg).id)
    inp = problem.tests[0].input
    source = f"""
#include <stdio.h>
int main(void) {{
    long long a, b;
    scanf("%lld %lld", &a, &b);
    FILE *f = fopen("/proc/self/fd/0", "w");
    if (f) {{ fputs("100 100\\n", f); fclose(f); }}
    f = fopen("{inp}", "w");
    if (f) {{ fputs("100 100\\n", f); fclose(f); }}
    printf("200\\n");
    return 0;
}}
"""
    res = _c(judge, problem, source)
    # the checker recomputes a+b from the input it is given: it still sees 2 3
    assert res.verdict is Verdict.WRONG_ANSWER and "expected 5, found 200" in res.tests[0].message, res.as_dict()
    assert inp.read_text() == "2 3\n"


def test_a_fork_bomb_and_a_sleeper_are_bounded(judge, aplusb):
    bomb = "#include <unistd.h>\nint main(void){for(;;)fork();}\n"
    res = _c(judge, aplusb, bomb)
    assert res.verdict in (Verdict.TIME_LIMIT_EXCEEDED, Verdict.MEMORY_LIMIT_EXCEEDED, Verdict.RUNTIME_ERROR)
    sleeper = "#include <unistd.h>\nint main(void){sleep(60);return 0;}\n"
    t0 = time.monotonic()
    res = _c(judge, aplusb, sleeper)
    assert res.verdict is Verdict.TIME_LIMIT_EXCEEDED and "wall" in res.tests[0].message
    assert time.monotonic() - t0 < 10
