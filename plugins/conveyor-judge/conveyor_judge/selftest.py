"""Built-in programs, the A+B problem, and the engine self-test (every language, every verdict)."""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from conveyor_judge.engine import Judge
from conveyor_judge.problems import load_problem
from conveyor_judge.verdicts import Verdict

#: program name → the verdict it must get on the A+B problem
EXPECTED: dict[str, Verdict] = {
    "aplusb": Verdict.ACCEPTED, "wa": Verdict.WRONG_ANSWER, "ce": Verdict.COMPILE_ERROR,
    "re": Verdict.RUNTIME_ERROR, "tle": Verdict.TIME_LIMIT_EXCEEDED, "mle": Verdict.MEMORY_LIMIT_EXCEEDED,
}
#: verdicts only C programs show (they need a special checker or output)
C_EXTRA: dict[str, tuple[Verdict, str]] = {
    "pe": (Verdict.PRESENTATION_ERROR, "identical"), "ole": (Verdict.OUTPUT_LIMIT_EXCEEDED, "standard"),
    "aplusb": (Verdict.SYSTEM_ERROR, "check_fail"),
}
APLUSB_TESTS = ((1, 2), (100, -7), (10**12, 10**12))


def program(language: str, name: str) -> str:
    """The text of a built-in program (``programs/{language}/{name}.*``)."""
    d = resources.files("conveyor_judge") / "programs" / language
    for entry in d.iterdir():
        if entry.name.rsplit(".", 1)[0] == name:
            return entry.read_text(encoding="utf-8")
    raise FileNotFoundError(f"no built-in program {language}/{name}")


def has_program(language: str, name: str) -> bool:
    """Whether a built-in program exists."""
    try:
        program(language, name)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def aplusb_package(toml: str = "time_limit_ms = 1000\nmemory_limit_mib = 64\n",
                   extra: dict[str, bytes] | None = None, tests: tuple[tuple[int, int], ...] = APLUSB_TESTS) -> bytes:
    """A zipped A+B problem package."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (a, b) in enumerate(tests, 1):
            zf.writestr(f"{i}.in", f"{a} {b}\n")
            zf.writestr(f"{i}.out", f"{a + b}\n")
        if toml:
            zf.writestr("problem.toml", toml)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass(frozen=True)
class SelfTestRow:
    """One self-test case."""

    language: str
    program: str
    expected: Verdict
    got: Verdict | None
    time_s: float
    detail: str = ""
    skipped: bool = False  # the language's toolchain is not available here

    @property
    def ok(self) -> bool:
        """Whether the verdict was the expected one (a skipped language is not a failure)."""
        return self.skipped or self.got is self.expected


def _unpack(data: bytes, root: Path, name: str) -> Path:
    from conveyor_judge.problems import safe_unpack
    dest = root / name
    safe_unpack(data, dest)
    return dest


def self_test(judge: Judge, languages: list[str] | None = None) -> list[SelfTestRow]:
    """Judge every built-in program of every available language (or ``languages``) and compare verdicts."""
    rows: list[SelfTestRow] = []
    with tempfile.TemporaryDirectory(prefix="selftest-", dir=judge.root / "problems") as tmp:
        root = Path(tmp)
        plain = load_problem("selftest", _unpack(aplusb_package(), root, "plain"))
        checks = {
            "identical": load_problem("selftest-identical", _unpack(
                aplusb_package("checker = 'identical'\n"), root, "identical")),
            "standard": load_problem("selftest-ole", _unpack(
                aplusb_package("output_limit_kib = 256\n"), root, "ole")),
            "check_fail": load_problem("selftest-se", _unpack(aplusb_package(
                "checker = 'testlib'\nchecker_source = 'check.c'\n",
                {"check.c": program("c", "check_fail").encode()}), root, "se")),
        }
        for lang in sorted(judge.languages.values(), key=lambda x: x.id):
            if languages is not None and lang.id not in languages:
                continue
            ok, why = lang.available()
            for name, expected in EXPECTED.items():
                if not has_program(lang.id, name):
                    continue
                if name == "ce" and lang.compile is None:
                    continue
                if not ok:
                    rows.append(SelfTestRow(lang.id, name, expected, None, 0.0, f"unavailable: {why}", True))
                    continue
                t0 = time.monotonic()
                res = judge.judge(plain, lang, program(lang.id, name).encode())
                rows.append(SelfTestRow(lang.id, name, expected, res.verdict, time.monotonic() - t0, res.message))
            if lang.id == "c" and ok:
                for name, (expected, which) in C_EXTRA.items():
                    t0 = time.monotonic()
                    res = judge.judge(checks[which], lang, program("c", name).encode())
                    rows.append(SelfTestRow(lang.id, f"{name} ({which})", expected, res.verdict,
                                            time.monotonic() - t0, res.message))
    return rows
