"""Memory limits for every runtime: cgroup memory where available, RLIMIT_AS with a grace where not."""

from __future__ import annotations

import pytest

from conveyor_judge.selftest import program
from conveyor_judge.verdicts import Verdict

LANGS = ["c", "cpp", "python3", "java", "rust", "javascript"]


@pytest.fixture(scope="module")
def as_judge(judge):
    """A Judge on the C sandbox with cgroups turned off: RLIMIT_AS is the only memory bound."""
    from conveyor_judge.engine import Judge
    from conveyor_sandbox.native import CSandbox
    j = Judge(sandbox=CSandbox(use_cgroups=False), languages=judge.languages.values(),
              checkers=judge.checkers.values(), root=judge.root)
    assert j.address_space_only
    return j


def test_the_default_sandbox_limits_memory_with_a_cgroup(judge, aplusb):
    assert not judge.address_space_only
    lim, heap, budget = judge.limits_for(aplusb, judge.language("java"))
    assert heap == 64 and budget == (64 + 160) * 1024 and lim.memory_kib == budget


@pytest.mark.parametrize("lang", LANGS)
def test_rlimit_as_only_runtimes_start_and_overuse_is_mle(as_judge, aplusb, lang):
    ok = as_judge.judge(aplusb, lang, program(lang, "aplusb").encode())
    assert ok.verdict is Verdict.ACCEPTED, ok.as_dict()
    bad = as_judge.judge(aplusb, lang, program(lang, "mle").encode())
    assert bad.verdict is Verdict.MEMORY_LIMIT_EXCEEDED, bad.as_dict()


@pytest.fixture(scope="module")
def fallback_judge(judge):
    """A Judge on the weak python-fallback backend (what choose_sandbox picks where the C one cannot load)."""
    from conveyor_judge.engine import Judge
    from conveyor_sandbox.fallback import PythonSandbox
    return Judge(sandbox=PythonSandbox(), languages=judge.languages.values(), checkers=judge.checkers.values(),
                 root=judge.root)


@pytest.mark.parametrize("lang", ["c", "python3", "java"])
@pytest.mark.parametrize("name", ["aplusb", "wa", "tle", "mle"])
def test_the_fallback_backend_gives_the_same_verdicts(fallback_judge, aplusb, lang, name):
    from conveyor_judge.selftest import EXPECTED
    res = fallback_judge.judge(aplusb, lang, program(lang, name).encode())
    want = {EXPECTED[name]}
    if (lang, name) == ("c", "mle"):
        # no cgroup and no per-program peak figure: malloc fails at the limit and the program decides (exit 3)
        want.add(Verdict.RUNTIME_ERROR)
    assert res.verdict in want, res.as_dict()
    assert res.sandbox == "python-fallback"
