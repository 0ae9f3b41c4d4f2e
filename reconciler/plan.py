"""Changes and plans: the diff between existing and desired recipients (pure).

A :class:`Change` knows how to describe itself, so the plan text, the JSON plan and the commit
message are renderings of the same objects, and what `plan` shows is what `apply` writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from reconciler.mapping import Conflict
from reconciler.recipient import FIELD_ORDER, Recipient
from reconciler.state import Hold, StoredRecipients

Action = Literal["add", "update", "remove"]
SYMBOLS: Mapping[str, str] = {"remove": "-", "update": "~", "add": "+"}


@dataclass(frozen=True, slots=True)
class Change:
    """One address added, updated or removed."""

    action: Action
    address: str
    old: Recipient | None
    new: Recipient | None
    # An update that moves the entry's recipient from this address (same id: a rename).
    renamed_from: str | None = None

    def field_changes(self) -> list[tuple[str, Any, Any]]:
        """(field, old value, new value) for every field that differs (updates only)."""
        old = self.old.to_dict() if self.old else {}
        new = self.new.to_dict() if self.new else {}
        return [(f, old.get(f), new.get(f)) for f in FIELD_ORDER if old.get(f) != new.get(f)]

    def describe(self) -> str:
        """One human line: ``+ alice@example.com  mailbox "Alice Smith"``."""
        if self.action == "update":
            details = ", ".join(f"{f}: {_show(o)} → {_show(n)}" for f, o, n in self.field_changes())
            if self.renamed_from is not None:
                assert self.new is not None
                details = f"renamed, {summarize(self.new)}" + (f"; {details}" if details else "")
                return f"~ {self.renamed_from} → {self.address}  {details}"
            return f"~ {self.address}  {details}"
        recipient = self.new if self.action == "add" else self.old
        assert recipient is not None
        return f"{SYMBOLS[self.action]} {self.address}  {summarize(recipient)}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action, "address": self.address}
        if self.renamed_from is not None:
            data["renamed_from"] = self.renamed_from
        if self.old is not None:
            data["old"] = self.old.to_dict()
        if self.new is not None:
            data["new"] = self.new.to_dict()
        return data


def summarize(recipient: Recipient) -> str:
    """A short description of a recipient for plan lines."""
    if recipient.kind == "alias":
        return f"alias → {recipient.target}"
    parts = [recipient.kind]
    if recipient.name:
        parts.append(json.dumps(recipient.name, ensure_ascii=False))
    if recipient.status and recipient.status != "active":
        parts.append(f"({recipient.status})")
    if recipient.members is not None:
        parts.append(f"{len(recipient.members)} members")
    return " ".join(parts)


def _show(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class DomainPlan:
    """Everything `plan` found for one domain, and everything `apply` needs to act on it."""

    domain: str
    changes: tuple[Change, ...]
    existing_count: int
    desired_count: int
    source: str
    dropped: Mapping[str, int] = field(default_factory=dict)
    conflicts: tuple[Conflict, ...] = ()
    hold: Hold | None = None
    notes: tuple[str, ...] = ()
    # Rollback and resume restore a reviewed state on purpose; the sync guards are not for them.
    guarded: bool = True

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    @cached_property
    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("add", "update", "remove"), 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def refusals(self) -> list[str]:
        """Why `apply` must not act on this plan; empty when it may."""
        if not self.guarded:
            return []
        reasons = [f"conflict: {c.describe()}" for c in self.conflicts]
        if self.desired_count == 0 and self.existing_count > 0:
            # An empty read is far more often a broken filter or export than everyone leaving.
            reasons.append(
                f"the directory gave no recipients while the state has {self.existing_count}; "
                "check the source and the users filter"
            )
        if self.hold is not None:
            reasons.append(
                f"{self.domain} is on hold since {self.hold.since}: {self.hold.reason}; "
                f"lift it with `reconciler resume {self.domain}`"
            )
        return reasons

    def summary(self) -> str:
        """The one-line summary used in plan output and as the commit subject."""
        counts = self.counts()
        if not self.changes:
            return f"{self.domain}: in sync ({self.existing_count} recipients)"
        after = self.existing_count + counts["add"] - counts["remove"]
        return (
            f"{self.domain}: {counts['add']} to add, {counts['update']} to update, "
            f"{counts['remove']} to remove ({self.existing_count} → {after} recipients)"
        )

    def digest(self) -> str:
        """Identifies exactly this set of changes (what an approval names)."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        payload = json.dumps(
            [self.domain, [c.to_dict() for c in self.changes]],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def compute_changes(
    existing: Mapping[str, Recipient], desired: Mapping[str, Recipient]
) -> tuple[Change, ...]:
    """The changes that turn ``existing`` into ``desired``: removals first (what a reviewer
    must look at hardest), then updates, then additions, each sorted by address.

    Recipients are compared by their canonical text when a side is stored as text (the state
    is), so unchanged recipients are never made into objects.
    """
    existing_text = _text_getter(existing)
    desired_text = _text_getter(desired)
    # In the desired mapping's own order, where one entry's aliases (one shared object) follow
    # each other: the text getter remembers only the last recipient it turned into text.
    updated = sorted(
        a
        for a in desired
        if a in existing and existing_text(a) != desired_text(a) and existing[a] != desired[a]
    )
    # Sorting plain address lists (not Change objects by a key function) keeps this fast at
    # hundreds of thousands of recipients.
    removed = sorted(existing.keys() - desired.keys())
    added = sorted(desired.keys() - existing.keys())
    return (
        *(Change("remove", a, existing[a], None) for a in removed),
        *(Change("update", a, existing[a], desired[a]) for a in updated),
        *(Change("add", a, None, desired[a]) for a in added),
    )


def _text_getter(recipients: Mapping[str, Recipient]) -> Callable[[str], str]:
    if isinstance(recipients, StoredRecipients):
        return recipients.text_of
    last: list[Any] = [None, ""]  # the last recipient and its text

    def text_of(address: str) -> str:
        recipient = recipients[address]
        if recipient is not last[0]:
            last[0], last[1] = recipient, recipient.to_json()
        text: str = last[1]
        return text

    return text_of


def apply_changes(
    existing: Mapping[str, Recipient], changes: tuple[Change, ...]
) -> Mapping[str, Recipient]:
    """The recipients after ``changes``: exactly what the plan showed, nothing recomputed."""
    steps = [
        step
        for c in changes
        for step in (
            ((c.renamed_from, None), (c.address, c.new))
            if c.renamed_from is not None
            else ((c.address, c.new),)
        )
    ]
    if isinstance(existing, StoredRecipients):
        return existing.updated(steps)
    result = dict(existing)
    for address, recipient in steps:
        if recipient is None:
            del result[address]
        else:
            result[address] = recipient
    return result
