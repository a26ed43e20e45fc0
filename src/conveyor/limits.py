"""What submit accepts: bounds on every field of a job, checked before anything is written."""

from __future__ import annotations

import json
import math
import operator
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from conveyor.errors import InvalidJob, InvalidPayload

if TYPE_CHECKING:
    from conveyor.store import JobSpec

    Spec = TypeVar("Spec", bound=JobSpec)

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
MAX_DEPTH = 64
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000
MAX_ATTEMPTS_MAX = 1000
MAX_DELAY_SECONDS = 366 * 86400
KIND_PATTERN = r"[A-Za-z0-9_.:-]{1,100}"
#: the longest value of each text field (its column's width)
TEXT_LIMITS = {"tenant": 200, "org": 200, "idempotency_key": 200, "file_id": 36, "trace_id": 64}
REASON_MAX = 4000

_KIND = re.compile(KIND_PATTERN)
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def _show(value: Any, limit: int = 60) -> str:
    """A short, escaped rendering of a refused value for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit
        return f"an {type(value).__name__} of {value.bit_length()} bits" if isinstance(value, int) else "?"
    return text if len(text) <= limit else text[:limit] + "…"


def _refuse(field: str, message: str) -> InvalidJob:
    return InvalidJob("invalid_job", message, field=field)


def _first_unprintable(text: str, allowed: str = "") -> int | None:
    if text.isprintable():
        return None
    for i, ch in enumerate(text):
        if ch not in allowed and unicodedata.category(ch) in _UNPRINTABLE:
            return i
    return None


def check_kind(kind: Any) -> str:
    """The kind, or InvalidJob: 1 to 100 of ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise _refuse("kind", f"kind {_show(kind)} is not a job kind name: use 1 to 100 letters, digits and "
                              "'_', '.', ':', '-' (such as 'cad.convert')")
    return kind


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_priority(priority: Any) -> int:
    """The priority as an int, or InvalidJob: an integer from PRIORITY_MIN to PRIORITY_MAX."""
    value = _as_int(priority)
    if value is None or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise _refuse("priority", f"priority must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX} "
                                  f"(higher runs first), got {_show(priority)}")
    return value


def check_max_attempts(max_attempts: Any) -> int | None:
    """None (the kind's or deployment's default), or an int from 1 to MAX_ATTEMPTS_MAX."""
    if max_attempts is None:
        return None
    value = _as_int(max_attempts)
    if value is None or not 1 <= value <= MAX_ATTEMPTS_MAX:
        raise _refuse("max_attempts", f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS_MAX}, "
                                      f"got {_show(max_attempts)}; leave it unset for the default")
    return value


def check_delay(seconds: Any) -> float:
    """Seconds before a job may run, or InvalidJob: finite, from 0 to MAX_DELAY_SECONDS."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(seconds, bool) or not 0 <= value <= MAX_DELAY_SECONDS:  # NaN fails every comparison
        raise _refuse("delay", f"delay must be a number of seconds from 0 to {MAX_DELAY_SECONDS} (366 days), "
                               f"got {_show(seconds)}")
    return value


def check_run_at(run_at: Any, now: datetime) -> datetime | None:
    """``run_at`` as naive UTC (naive input is taken as UTC), at most 366 days after ``now``."""
    if run_at is None:
        return None
    if not isinstance(run_at, datetime):
        raise _refuse("run_at", f"run_at must be a datetime, got {type(run_at).__name__}")
    try:
        value = run_at.astimezone(UTC).replace(tzinfo=None) if run_at.tzinfo is not None else run_at
    except OverflowError:
        raise _refuse("run_at", f"run_at {_show(str(run_at))} is out of range in UTC") from None
    if value - now > timedelta(seconds=MAX_DELAY_SECONDS):
        raise _refuse("run_at", f"run_at {_show(str(run_at))} is more than 366 days from now; "
                                "submit it closer to the time it should run")
    return value


def check_text(field: str, value: Any, limit: int) -> Any:
    """A tenant, org, key or id: unset, or printable text of at most ``limit`` characters."""
    if value is None or value == "":
        return value
    if not isinstance(value, str):
        raise _refuse(field, f"{field} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise _refuse(field, f"{field} is {len(value)} characters; the limit is {limit}")
    bad = _first_unprintable(value)
    if bad is not None:
        raise _refuse(field, f"{field} contains the control character U+{ord(value[bad]):04X} at position {bad}; "
                             "send printable text")
    return value


def check_reason(reason: Any) -> str:
    """A cancel reason: text of at most REASON_MAX characters, no control characters but newline and tab."""
    if not isinstance(reason, str):
        raise _refuse("reason", f"reason must be a string, got {type(reason).__name__}")
    if len(reason) > REASON_MAX:
        raise _refuse("reason", f"reason is {len(reason)} characters; the limit is {REASON_MAX}")
    bad = _first_unprintable(reason, allowed="\n\t")
    if bad is not None:
        raise _refuse("reason", f"reason contains the control character U+{ord(reason[bad]):04X} at position "
                                f"{bad}; send printable text")
    return reason


# ---------------------------------------------------------------- payload

def _path(node: tuple[Any, ...] | None) -> str:
    keys: list[str] = []
    while node is not None:
        node, key = node
        keys.append(f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key[:40])}]")
    keys.reverse()
    return "payload" + "".join(keys if len(keys) <= 8 else ["…", *keys[-6:]])


def _too_large(size: int, limit: int, exact: bool) -> InvalidPayload:
    return InvalidPayload(f"payload is {'' if exact else 'at least '}{size} bytes of JSON; the limit is {limit} "
                          "(CONVEYOR_MAX_PAYLOAD_BYTES): put large inputs in storage and send their key",
                          code="payload_too_large")


def _scan(payload: Any, max_bytes: int) -> None:
    """Refuse what JSON cannot hold, nesting past MAX_DEPTH, and (early) sizes past ``max_bytes``.

    Level by level, so no input can exhaust the stack. ``budget`` is a lower bound of
    the encoded size: past twice the limit (or 1 MiB) it stops a huge payload before the
    encoder copies it, and it bounds the work spent on a structure that contains itself.
    Below that the caller measures the exact size. A refusal is explained by ``_explain``.
    """
    stop = max(2 * max_bytes, 1 << 20)
    budget = 0
    level = [payload]
    for depth in range(MAX_DEPTH + 1):
        below: list[Any] = []
        for value in level:
            if isinstance(value, str):
                budget += len(value) + 2
            elif value is None or isinstance(value, int):  # bool is an int
                budget += 1
            elif isinstance(value, float) and -math.inf < value < math.inf:
                budget += 1
            elif isinstance(value, (dict, list, tuple)) and depth < MAX_DEPTH:
                budget += 1 + max(len(value), 1)  # brackets and the commas between items
                if budget > stop:  # before a huge container's items are listed
                    break
                if isinstance(value, dict):
                    for key in value:
                        if not isinstance(key, str):
                            _explain(payload, stop)
                        budget += len(key) + 3
                    below.extend(value.values())
                else:
                    below.extend(value)
            else:
                _explain(payload, stop)
        if budget > stop:
            raise _too_large(budget, max_bytes, exact=False)
        if not below:
            return
        level = below


def _explain(payload: Any, stop: int) -> NoReturn:
    """Find where the payload breaks a rule (depth first, naming the path) and raise InvalidPayload."""
    budget = 0
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(payload, 0, None)]
    while stack and budget <= stop:
        value, depth, path = stack.pop()
        budget += 1 + (len(value) if isinstance(value, (str, dict, list, tuple)) else 0)
        if isinstance(value, (str, int)) or value is None:
            continue
        if isinstance(value, float):
            if math.isfinite(value):
                continue
            raise InvalidPayload(f"payload is not plain JSON: {_path(path)} is {value!r}, and JSON has no NaN "
                                 "or Infinity; send null, a string or a finite number")
        if not isinstance(value, (dict, list, tuple)):
            raise InvalidPayload(f"payload is not plain JSON: {_path(path)} is a {type(value).__name__}; send "
                                 "objects, lists, strings, numbers, booleans and null only")
        if depth >= MAX_DEPTH:
            raise InvalidPayload(f"payload is nested more than {MAX_DEPTH} levels deep at {_path(path)} "
                                 "(or contains itself); flatten it")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidPayload(f"payload is not plain JSON: {_path(path)} has the key {_show(key)} "
                                         f"({type(key).__name__}); JSON object keys are strings")
                stack.append((item, depth + 1, (path, key)))
        else:
            stack.extend((item, depth + 1, (path, i)) for i, item in enumerate(value))
    raise InvalidPayload(f"payload is not plain JSON, or nested more than {MAX_DEPTH} levels deep; send objects, "
                         "lists, strings, numbers, booleans and null only")


def check_payload(payload: Any, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
    """The payload, checked to be plain JSON within the bounds; else InvalidPayload naming what, where, the fix."""
    _scan(payload, max_bytes)
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # such as an int past Python's digit limit
        raise InvalidPayload(f"payload is not plain JSON ({exc})") from None
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise _too_large(size, max_bytes, exact=True)
    return payload


def json_text_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, found without parsing (no recursion)."""
    depth = deepest = 0
    for ch in _BRACKET.findall(_JSON_STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def json_too_deep(text: str, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest more than ``limit`` levels (``json_text_depth``)."""
    if text.count("[") + text.count("{") <= limit:  # most texts: too few brackets to nest that deep
        return False
    return json_text_depth(text) > limit


def parse_payload(text: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
    """Parse JSON text from a user (the CLI) into a checked payload; ValueError if it is not JSON at all."""
    if json_too_deep(text, MAX_DEPTH):
        raise InvalidPayload(f"payload is nested more than {MAX_DEPTH} levels deep; flatten it")

    def no_constant(name: str) -> Any:
        raise InvalidPayload(f"payload is not plain JSON: it contains {name}, and JSON has no NaN or Infinity; "
                             "send null, a string or a finite number")

    try:
        data = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # such as an int past Python's digit limit
        raise InvalidPayload(f"payload is not plain JSON ({exc})") from None
    return check_payload(data, max_bytes)


# ---------------------------------------------------------------- whole jobs

def check_spec(spec: Spec, max_payload_bytes: int, now: datetime) -> Spec:
    """``spec`` if every field is within bounds (a copy if some needed normalising), else InvalidJob."""
    check_kind(spec.kind)
    for name, limit in TEXT_LIMITS.items():
        check_text(name, getattr(spec, name), limit)
    check_payload(spec.payload, max_payload_bytes)
    fixed: dict[str, Any] = {"priority": check_priority(spec.priority),
                             "max_attempts": check_max_attempts(spec.max_attempts),
                             "run_at": check_run_at(spec.run_at, now)}
    changed = {k: v for k, v in fixed.items() if v is not getattr(spec, k)}
    return replace(spec, **changed) if changed else spec


def check_specs(specs: Sequence[Spec], max_payload_bytes: int, now: datetime) -> list[Spec]:
    """Every spec checked; the error of a batch names the job's position in it."""
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(check_spec(spec, max_payload_bytes, now))
        except InvalidJob as exc:
            if len(specs) > 1:
                exc.message = f"job {i + 1} of {len(specs)}: {exc.message}"
                exc.args = (exc.message,)
            raise
    return out
