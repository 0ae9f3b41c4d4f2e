"""Text from files and directories as terminal and pull-request lines show it: one printable
line each, whatever the text holds (a hand-edited state, a directory value).
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.recipient import json_string


def shown(text: str) -> str:
    """An address, a DN…, as plan lines show it: as it is, or quoted when it holds anything
    unprintable. A hand-edited state can: a newline or a terminal escape there would break
    the line a reviewer reads, or forge another."""
    return text if text.isprintable() else quoted(text)


def quoted(text: str) -> str:
    """``text`` as a JSON string that prints as one plain line: JSON escapes the C0 controls,
    and here the rest of the unprintable (DEL, C1 controls, bidirectional overrides, line
    separators) is escaped too; json.loads gives ``text`` back."""
    return printable(json_string(text))


def printable(text: str) -> str:
    """``text`` with whatever would not print escaped as JSON escapes it (``\\uXXXX``)."""
    if text.isprintable():  # (in C, and nearly always so)
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(character: str) -> str:
    code = ord(character)
    if code > 0xFFFF:  # as JSON writes it: a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def shown_value(value: Any) -> str:
    """A field's value as plan lines show it: JSON, printable, or (none)."""
    return "(none)" if value is None else printable(json.dumps(value, ensure_ascii=False))
