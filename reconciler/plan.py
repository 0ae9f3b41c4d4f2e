"""Changes and plans: the diff between existing and desired recipients (pure).

A :class:`Change` knows how to describe itself, so the plan text, the JSON plan and the commit
message are renderings of the same objects, and what `plan` shows is what `apply` writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple

from reconciler import guards
from reconciler.mapping import Conflict
from reconciler.printable import quoted, shown, shown_value
from reconciler.recipient import FIELD_ORDER, Recipient, json_string
from reconciler.spec import Limits
from reconciler.state import Hold, StoredRecipients

# A deactivation (policy.removal: deactivate) keeps a leaver with status "disabled".
Action = Literal["add", "update", "deactivate", "remove"]
ACTIONS: tuple[Action, ...] = ("add", "update", "deactivate", "remove")
SYMBOLS: Mapping[str, str] = {"remove": "-", "deactivate": "!", "update": "~", "add": "+"}


class Change(NamedTuple):
    """One address added, updated or removed. (A named tuple, as Recipient is: a first plan
    of a big directory makes one per address.)"""

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
        address = shown(self.address)
        if self.action == "add" and self.new is not None:  # every line of a first plan: first
            return f"+ {address}  {summarize(self.new)}"
        if self.action == "update":
            details = ", ".join(
                f"{f}: {shown_value(o)} → {shown_value(n)}" for f, o, n in self.field_changes()
            )
            if self.renamed_from is not None:
                assert self.new is not None
                details = f"renamed, {summarize(self.new)}" + (f"; {details}" if details else "")
                return f"~ {shown(self.renamed_from)} → {address}  {details}"
            return f"~ {address}  {details}"
        if self.action == "deactivate":
            assert self.old is not None
            return f"! {address}  {summarize(self.old)} → disabled"
        recipient = self.new if self.action == "add" else self.old
        assert recipient is not None
        return f"{SYMBOLS[self.action]} {address}  {summarize(recipient)}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action, "address": self.address}
        if self.renamed_from is not None:
            data["renamed_from"] = self.renamed_from
        if self.old is not None:
            data["old"] = self.old.to_dict()
        if self.new is not None:
            data["new"] = self.new.to_dict()
        return data


@dataclass(frozen=True, slots=True)
class Skipped:
    """A change the sync would make but the spec's policy or ``protected`` leaves out."""

    change: Change
    reason: str

    def describe(self) -> str:
        return f"{self.change.describe()}  (skipped: {self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {**self.change.to_dict(), "reason": self.reason}


def summarize(recipient: Recipient) -> str:
    """A short description of a recipient for plan lines (every line of a first plan)."""
    kind, name, _, status, target, members, _, _ = recipient
    if kind == "alias":
        return f"alias → {shown(target)}" if target is not None else "alias"
    text = f"{kind} {quoted(name)}" if name else kind
    if status and status != "active":
        text += f" ({shown(status)})"
    if members is not None:
        text += f" {len(members)} members"
    return text


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
    skipped: tuple[Skipped, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # Digests of what the plan was made from ("spec", "state", "directory"): a saved plan
    # applies only while they are unchanged.
    fingerprints: Mapping[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Changes per action; "deactivate" only when there are some."""
        counts = dict(self._counts)
        if not counts["deactivate"]:
            del counts["deactivate"]
        return counts

    @cached_property
    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    @property
    def removals(self) -> int:
        """Addresses deleted or deactivated: what --allow-deletes names."""
        return self._counts["remove"] + self._counts["deactivate"]

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def refusals(self) -> list[str]:
        """Why `apply` must not act on this plan (without overrides); empty when it may."""
        return [refusal.message for refusal in self.verdict]

    @cached_property
    def verdict(self) -> tuple[guards.Refusal, ...]:
        """Every guard this plan fails, before any override (see reconciler.guards)."""
        return tuple(guards.refusals(self)) if self.guarded else ()

    def summary(self) -> str:
        """The one-line summary used in plan output and as the commit subject."""
        counts = self.counts()
        if not self.changes:
            return f"{self.domain}: in sync ({self.existing_count} recipients)"
        after = self.existing_count + counts["add"] - counts["remove"]
        deactivate = f"{counts['deactivate']} to deactivate, " if "deactivate" in counts else ""
        return (
            f"{self.domain}: {counts['add']} to add, {counts['update']} to update, {deactivate}"
            f"{counts['remove']} to remove ({self.existing_count} → {after} recipients)"
        )

    def digest(self) -> str:
        """Identifies exactly this set of changes (what an approval names)."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        return _digest_of(self.domain, map(_compact_change, self.changes))


def plan_digest(domain: str, changes: Iterable[dict[str, Any]]) -> str:
    """The digest of a domain's changes in their plain (JSON) form: the SHA-256 of
    ``json.dumps([domain, changes], sort_keys=True, ensure_ascii=False, separators=(",", ":"))``,
    fed a stretch of changes at a time so that a plan of a million changes is never one string."""
    return _digest_of(domain, map(_compact, changes))


def _digest_of(domain: str, changes: Iterable[str]) -> str:
    """:func:`plan_digest` of the changes' compact JSON texts."""
    digest = hashlib.sha256(b"[" + _compact(domain).encode("utf-8") + b",[")
    pending, separator = iter(changes), ""
    while stretch := list(itertools.islice(pending, 4096)):
        digest.update((separator + ",".join(stretch)).encode("utf-8"))
        separator = ","
    digest.update(b"]]")
    return digest.hexdigest()[:16]


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _compact_change(change: Change) -> str:
    """``_compact(change.to_dict())``, put together directly: a first plan digests a change
    for every address, and json.dumps with sorted keys costs several times this."""
    text = f'{{"action":"{change.action}","address":{json_string(change.address)}'
    if change.new is not None:
        text += ',"new":' + _compact_recipient(change.new)
    if change.old is not None:
        text += ',"old":' + _compact_recipient(change.old)
    if change.renamed_from is not None:
        text += ',"renamed_from":' + json_string(change.renamed_from)
    return text + "}"


def _compact_recipient(recipient: Recipient) -> str:
    """``_compact(recipient.to_dict())``: its fields in sorted order, the empty ones left out."""
    kind, name, id_, status, target, members, username, privileges = recipient
    return (
        ("{" if id_ is None else f'{{"id":{json_string(id_)},')
        + f'"kind":{json_string(kind)}'
        + ("" if members is None else f',"members":{_compact(list(members))}')
        + ("" if name is None else f',"name":{json_string(name)}')
        + ("" if privileges is None else f',"privileges":{_compact(list(privileges))}')
        + ("" if status is None else f',"status":{json_string(status)}')
        + ("" if target is None else f',"target":{json_string(target)}')
        + ("" if username is None else f',"username":{json_string(username)}')
        + "}"
    )


def compute_changes(
    existing: Mapping[str, Recipient], desired: Mapping[str, Recipient]
) -> tuple[Change, ...]:
    """The changes that turn ``existing`` into ``desired``: removals first (what a reviewer
    must look at hardest), then updates, then additions, each sorted by address.

    Recipients are compared by their canonical text when a side is stored as text (the state
    is), so unchanged recipients are never made into objects.
    """
    if isinstance(existing, StoredRecipients):
        removed_lines, updated_lines, added = existing.differences(desired)
        return (
            *(Change("remove", a, Recipient.from_json(line), None) for a, line in removed_lines),
            *(
                Change("update", a, Recipient.from_json(line), desired[a])
                for a, line in updated_lines
            ),
            *_additions(added, desired),
        )
    # Sorting plain address lists (not Change objects by a key function) keeps this fast
    # at hundreds of thousands of recipients; the addresses on both sides are looked for
    # from the smaller side (a first plan's state is empty).
    if len(existing) <= len(desired):
        both = [a for a in existing if a in desired]
    else:
        both = [a for a in desired if a in existing]
    updated = sorted(a for a in both if existing[a] != desired[a])
    removed = sorted(existing.keys() - desired.keys()) if len(both) < len(existing) else []
    added = sorted(desired.keys() - existing.keys()) if existing else sorted(desired)
    return (
        *(Change("remove", a, existing[a], None) for a in removed),
        *(Change("update", a, existing[a], desired[a]) for a in updated),
        *_additions(added, desired),
    )


def _additions(added: list[str], desired: Mapping[str, Recipient]) -> list[Change]:
    # Every address of a first plan: made as the tuples they are (a named tuple's own
    # constructor is a Python function).
    new = tuple.__new__
    return [new(Change, ("add", a, None, desired[a], None)) for a in added]


def apply_changes(
    existing: Mapping[str, Recipient], changes: tuple[Change, ...]
) -> Mapping[str, Recipient]:
    """The recipients after ``changes``: exactly what the plan showed, nothing recomputed."""
    if isinstance(existing, StoredRecipients):
        return existing.updated(_steps(changes))
    # (no list of the steps: a first apply has one for every address, next to the result)
    result = dict(existing)
    for address, recipient in _steps(changes):
        if recipient is None:
            del result[address]
        else:
            result[address] = recipient
    return result


def _steps(changes: Iterable[Change]) -> Iterator[tuple[str, Recipient | None]]:
    """Each change as (address, recipient or None for removal): a rename is two."""
    for change in changes:
        if change.renamed_from is not None:
            yield change.renamed_from, None
        yield change.address, change.new
