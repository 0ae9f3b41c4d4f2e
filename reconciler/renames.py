"""What a plan knows about existing recipients beyond their text: which new mailbox is an existing
one under a new address (stable identity, ``users.id_attribute``), and which fields a mailbox
keeps from before (``recipient_defaults`` are for new recipients only). Pure functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.plan import Change, compute_changes
from reconciler.recipient import Recipient
from reconciler.state import StoredRecipients


def find_renames(
    existing: Mapping[str, Recipient], desired: Mapping[str, Recipient]
) -> dict[str, str]:
    """new address -> old address, for each new mailbox whose id an existing mailbox has that
    is gone from the desired mailboxes (removed, or now an alias). See :func:`renames_in`."""
    return renames_in(compute_changes(existing, desired))


def renames_in(changes: Sequence[Change]) -> dict[str, str]:
    """The renames among the changes from the existing to the desired recipients: each added
    mailbox whose id a removed mailbox (or one that became an alias or a list) had. Ids shared
    by several mailboxes on either side pair nothing: a guess would be worse than remove + add.
    Works from the changes alone, so a plan with nothing added costs nothing here."""
    added = [
        (c.address, c.new.id)
        for c in changes
        if c.action == "add"
        and c.new is not None
        and c.new.kind == "mailbox"
        and c.new.id is not None
    ]
    if not added:
        return {}
    by_id: dict[str, list[str]] = {}
    for change in changes:
        old, new = change.old, change.new
        if old is None or old.kind != "mailbox" or old.id is None:
            continue
        if change.action == "remove" or (new is not None and new.kind != "mailbox"):
            by_id.setdefault(old.id, []).append(change.address)
    new_ids: dict[str | None, int] = {}
    for _, new_id in added:
        new_ids[new_id] = new_ids.get(new_id, 0) + 1
    return {
        new: by_id[new_id][0]
        for new, new_id in added
        if len(by_id.get(new_id or "", ())) == 1 and new_ids[new_id] == 1
    }


def fold_renames(
    changes: Iterable[Change], renames: Mapping[str, str], existing: Mapping[str, Recipient]
) -> tuple[Change, ...]:
    """The changes with each rename's remove + add made one update ``renamed_from`` the old
    address; an old address that stays as an alias is then added after the rename."""
    if not renames:
        return tuple(changes)
    changes = tuple(changes)
    old_addresses = {old: new for new, old in renames.items()}
    added = {c.address: c.new for c in changes if c.action == "add" and c.address in renames}
    folded: list[Change] = []
    for change in changes:
        if change.action == "add" and change.address in renames:
            continue  # made part of the rename below
        if change.address in old_addresses and change.action in ("remove", "update"):
            if change.action == "update":  # the old address lives on as an alias: re-add it
                folded.append(Change("add", change.address, None, change.new))
            continue
        folded.append(change)
    renamed = [
        Change("update", new, existing[old], added[new], renamed_from=old)
        for new, old in renames.items()
    ]
    removes = [c for c in folded if c.action == "remove"]
    updates = sorted([c for c in folded if c.action == "update"] + renamed, key=_address)
    adds = sorted([c for c in folded if c.action == "add"], key=_address)
    return (*removes, *updates, *adds)


def _address(change: Change) -> str:
    return change.address


def with_recipient_defaults(
    desired: Mapping[str, Recipient],
    existing: Mapping[str, Recipient],
    renames: Mapping[str, str],
    defaults: Mapping[str, Any],
) -> Mapping[str, Recipient]:
    """The desired recipients with ``defaults`` given to new mailboxes; a mailbox that exists
    (at its address, or at the address it was renamed from) keeps the fields it has."""
    if not defaults:
        return desired
    privileges = tuple(defaults.get("privileges", ())) or None
    result = dict(desired)
    for address, recipient in desired.items():
        if recipient.kind != "mailbox":
            continue
        before = address if address in existing else renames.get(address)
        kept = _existing_privileges(existing, before) if before is not None else privileges
        if kept != recipient.privileges:
            result[address] = recipient._replace(privileges=kept)
    return result


def _existing_privileges(existing: Mapping[str, Recipient], address: str) -> tuple[str, ...] | None:
    if isinstance(existing, StoredRecipients):
        text = existing.text_of(address)
        if '"privileges"' not in text:  # the usual line: nothing to parse
            return None
        value = json.loads(text).get("privileges")
        return tuple(value) if value is not None else None
    return existing[address].privileges
