"""The recipient: what the state records per address and what the mapping produces."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

KINDS = ("mailbox", "alias", "list")
STATUSES = ("active", "disabled")

# The order fields are written in, so a state line always reads the same way.
FIELD_ORDER = ("kind", "name", "id", "status", "username", "privileges", "target", "members")
_MAILBOX_FIELDS = frozenset(("kind", "name", "id", "status", "username"))
# Characters YAML does not allow raw in a double-quoted scalar, or reads as a line break.
# (A raw string: re reads the escapes, so the source holds no lone surrogate.)
_YAML_UNSAFE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]"
)


# json's own (C) string encoder: json.dumps(text, ensure_ascii=False) for a str, without
# json.dumps' per-call set-up.
json_string = json.encoder.encode_basestring


def canonical_json(value: Any) -> str:
    """Compact one-line JSON that is also a valid YAML flow node: the state's line format."""
    return _yaml_safe(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


def _yaml_safe(text: str) -> str:
    """JSON text with the characters YAML would misread escaped as \\uXXXX."""
    # JSON already escapes the C0 controls, so ASCII text (isascii() is a flag, not a scan)
    # can only hold DEL: no regex search for the usual line.
    if text.isascii() and "\x7f" not in text:
        return text
    if _YAML_UNSAFE.search(text) is None:
        return text
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class Recipient(NamedTuple):
    """One address's record. The address itself is the key it is stored under.

    A named tuple rather than a frozen dataclass: as immutable and hashable, and built in a
    third of the time (a 100k-user directory makes hundreds of thousands of them per plan).
    Its fields are compared by position, so :meth:`to_dict`, never tuple order, is its form."""

    kind: str
    name: str | None = None
    id: str | None = None
    status: str | None = None
    target: str | None = None
    members: tuple[str, ...] | None = None
    username: str | None = None  # the login name (users.username_attribute)
    privileges: tuple[str, ...] | None = None  # given once, from recipient_defaults

    def to_dict(self) -> dict[str, Any]:
        """The plain form written to the state and to JSON plans: no empty fields, fixed order."""
        data: dict[str, Any] = {}
        for name in FIELD_ORDER:
            value = getattr(self, name)
            if value is not None:
                data[name] = list(value) if isinstance(value, tuple) else value
        return data

    def to_json(self) -> str:
        """The canonical text of this recipient, as a state line holds it.

        Mailboxes and aliases (nearly every line of a state) are put together directly:
        this runs once per recipient of every plan."""
        kind, name, id_, status, target, members, username, privileges = self
        if members is not None or privileges is not None:
            return canonical_json(self.to_dict())  # lists, privileges
        if kind == "alias":
            plain = name is None and id_ is None and status is None and username is None
            if plain and target is not None:
                return _yaml_safe('{"kind": "alias", "target": ' + json_string(target) + "}")
            return canonical_json(self.to_dict())  # a deactivated alias…
        if target is not None:
            return canonical_json(self.to_dict())
        if name is not None and id_ is not None and status in STATUSES and username is None:
            # The mailbox of nearly every directory entry (a status never needs escaping).
            text = (
                f'{{"kind": {json_string(kind)}, "name": {json_string(name)}, '
                f'"id": {json_string(id_)}, "status": "{status}"}}'
            )
        else:
            text = (
                f'{{"kind": {json_string(kind)}'
                + ("" if name is None else f', "name": {json_string(name)}')
                + ("" if id_ is None else f', "id": {json_string(id_)}')
                + ("" if status is None else f', "status": {json_string(status)}')
                + ("" if username is None else f', "username": {json_string(username)}')
                + "}"
            )
        return _yaml_safe(text)

    @classmethod
    def from_json(cls, text: str) -> Recipient:
        """Inverse of :meth:`to_json` (a state line's value); raises ValueError."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipient:
        """Inverse of :meth:`to_dict`; raises ValueError naming the first bad field."""
        # The usual shapes, checked cheaply: a state file has one of these per line.
        kind = data.get("kind")
        target = data.get("target")
        if kind == "alias" and len(data) == 2 and type(target) is str and target:
            return cls("alias", target=target)
        if (
            kind == "mailbox"
            and data.keys() <= _MAILBOX_FIELDS
            and all(type(v) is str for v in data.values())
            and data.get("status", "active") in STATUSES
        ):
            return cls(
                "mailbox",
                data.get("name"),
                data.get("id"),
                data.get("status"),
                username=data.get("username"),
            )
        return cls._checked(data)

    @classmethod
    def _checked(cls, data: Mapping[str, Any]) -> Recipient:
        unknown = sorted(set(data) - set(FIELD_ORDER))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        for field in ("name", "id", "status", "username", "target"):
            if data.get(field) is not None and not isinstance(data[field], str):
                raise ValueError(f"{field} must be a string")
        if data.get("status") is not None and data["status"] not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if kind == "alias" and not data.get("target"):
            raise ValueError("an alias needs a target")
        members = data.get("members")
        if members is not None and (
            not isinstance(members, list) or not all(isinstance(m, str) for m in members)
        ):
            raise ValueError("members must be a list of addresses")
        privileges = data.get("privileges")
        if privileges is not None and (
            not isinstance(privileges, list) or not all(isinstance(p, str) for p in privileges)
        ):
            raise ValueError("privileges must be a list of strings")
        return cls(
            kind=kind,
            name=data.get("name"),
            id=data.get("id"),
            status=data.get("status"),
            target=data.get("target"),
            members=tuple(members) if members is not None else None,
            username=data.get("username"),
            privileges=tuple(privileges) if privileges is not None else None,
        )
