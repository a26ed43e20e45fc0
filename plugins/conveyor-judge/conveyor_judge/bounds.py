"""The documented ranges of a problem's numbers: every limit finite and within what the sandbox can enforce."""

from __future__ import annotations

import math
from dataclasses import dataclass

from conveyor_judge.errors import JudgeError


@dataclass(frozen=True)
class Range:
    """An inclusive range of one setting, with its unit for messages."""

    low: float
    high: float
    unit: str = ""
    low_open: bool = False  # the low end itself is refused (a tolerance may be 0, a time limit may not)

    def describe(self) -> str:
        """``1 to 60000 ms`` style text."""
        low = f"more than {self.low:g}" if self.low_open else f"{self.low:g}"
        return f"{low} to {self.high:g}{' ' + self.unit if self.unit else ''}"


TIME_LIMIT_MS = Range(1, 60_000, "ms")
MEMORY_LIMIT_MIB = Range(1, 4096, "MiB")
OUTPUT_LIMIT_KIB = Range(1, 65_536, "KiB")
POINTS = Range(0, 1_000_000, "", low_open=True)
TOLERANCE = Range(0, 1_000_000)
NAME_MAX_CHARS = 200

RANGES: dict[str, Range] = {
    "time_limit_ms": TIME_LIMIT_MS, "memory_limit_mib": MEMORY_LIMIT_MIB, "output_limit_kib": OUTPUT_LIMIT_KIB,
    "points": POINTS, "float_abs_tol": TOLERANCE, "float_rel_tol": TOLERANCE,
}


def number(value: object, key: str, label: str) -> float:
    """A finite number from a setting (numbers, or text such as ``2.5`` in ``.timelimit``), or the refusal."""
    if isinstance(value, bool):
        raise JudgeError("invalid_problem_package", f"{label}: {key} = {value!r} should be a number")
    if isinstance(value, int):
        num = float(value) if abs(value) < 10 ** 18 else math.copysign(1e18, value)  # out of range, but finite
    elif isinstance(value, float):
        num = value
    elif isinstance(value, str):
        try:
            num = float(value.strip())
        except ValueError:
            raise JudgeError("invalid_problem_package",
                             f"{label}: {key} = {value[:40]!r} should be a number") from None
    else:
        raise JudgeError("invalid_problem_package", f"{label}: {key} should be a number, not a {type(value).__name__}")
    if not math.isfinite(num):
        raise JudgeError("invalid_problem_package",
                         f"{label}: {key} = {str(value)[:40]} is not a finite number; use {RANGES[key].describe()}"
                         if key in RANGES else f"{label}: {key} = {str(value)[:40]} is not a finite number")
    return num


def check_range(value: object, key: str, label: str) -> float:
    """A setting's value once it is a finite number within its documented range."""
    num = number(value, key, label)
    rng = RANGES[key]
    below = num <= rng.low if rng.low_open else num < rng.low
    if below or num > rng.high:
        raise JudgeError("invalid_problem_package",
                         f"{label}: {key} = {str(value)[:40]} is out of range; use {rng.describe()}")
    return num


def check_int_range(value: object, key: str, label: str) -> int:
    """A whole-number setting (a limit) within its range."""
    num = check_range(value, key, label)
    if num != int(num):
        raise JudgeError("invalid_problem_package", f"{label}: {key} = {value!r} should be a whole number")
    return int(num)
