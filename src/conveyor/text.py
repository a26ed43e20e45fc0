"""Job text made safe for a terminal: control characters are shown as escapes, never sent raw."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, bidirectional overrides and isolates, line/paragraph separators, lone surrogates
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_MULTILINE = re.compile(f"[{_CONTROLS}]")
_UNSAFE_LINE = re.compile(f"[\n{_CONTROLS}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, *, multiline: bool = False) -> str:
    """``str(value)`` with control characters escaped (``\\x1b``); newlines kept only if ``multiline``.

    Tabs are kept; an ESC escaped this way disarms the whole sequence it starts.
    """
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE_MULTILINE if multiline else _UNSAFE_LINE).sub(_escape, text)
