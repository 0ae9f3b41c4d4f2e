"""The committed state in the forms mail filters read: a Postfix map, CSV, JSON (pure).

Every export is sorted by address and produced piece by piece, so a 100k-recipient state is
never one string in memory and two exports of the same state are byte-identical. Recipients
that are not active (deactivated leavers, disabled accounts kept with ``disabled: deactivate``)
are left out unless asked for: a filter should not accept mail for them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.recipient import Recipient
from reconciler.state import Hold, State, StoredRecipients, load_state

EXPORT_FORMAT_VERSION = 1
CSV_COLUMNS = ("address", "kind", "status", "name", "target", "members", "id", "username")
_CHUNK = 4096  # lines per written piece


class ExportFormat(StrEnum):
    postfix = "postfix"
    csv = "csv"
    json = "json"


class ExportError(ReconcilerError):
    """The state holds something the chosen format cannot express."""


def load_exported_state(path: Path, domain: str, spec_file: Path) -> State:
    """The state of ``domain`` in ``path``; an ExportError says why when there is no such file
    (never applied, or not a domain at all: ``spec_file`` tells which)."""
    if not path.exists():
        known = spec_file.exists()
        raise ExportError(
            f"{domain} has no state file {path}"
            + (": it was never applied" if known else " and no spec: an unknown domain"),
            "apply it first: reconciler apply " + domain
            if known
            else "check the domain name; state/ holds one file per synced domain",
        )
    return load_state(path, domain)


def sorted_recipients(recipients: Mapping[str, Recipient]) -> Iterator[tuple[str, Recipient]]:
    """(address, recipient) in address order; a state loaded from its file is walked as the
    file is, without building an index of every address first."""
    if isinstance(recipients, StoredRecipients):
        for address, text in recipients.items_text():
            yield address, Recipient.from_json(text)
    else:
        for address in sorted(recipients):
            yield address, recipients[address]


def is_active(recipient: Recipient) -> bool:
    """No status is an active recipient (aliases and lists carry none)."""
    return recipient.status in (None, "active")


def selected(state: State, include_disabled: bool) -> Iterator[tuple[str, Recipient]]:
    for address, recipient in sorted_recipients(state.recipients):
        if include_disabled or is_active(recipient):
            yield address, recipient


def export_chunks(
    state: State, output_format: ExportFormat, *, include_disabled: bool = False
) -> Iterator[str]:
    """The export of ``state`` in ``output_format``, in pieces to write one after another."""
    recipients = selected(state, include_disabled)
    if output_format is ExportFormat.postfix:
        return _chunked(postfix_line(address) for address, _ in recipients)
    if output_format is ExportFormat.csv:
        return _csv(recipients)
    return iter_state_json(state.domain, state.hold, recipients)


def postfix_line(address: str) -> str:
    """``address OK``: a lookup table line for Postfix (relay_recipient_maps and the like).

    postmap reads whitespace-separated key and value, one entry a line; a line starting with
    ``#`` is a comment and one starting with whitespace continues the previous entry, so such
    keys cannot be written at all. Stored addresses are lower case already, as postmap folds
    keys of its hash and lmdb tables."""
    if address.startswith("#") or any(c.isspace() for c in address):
        raise ExportError(
            f"{address!r} cannot be a key of a Postfix lookup table "
            "(a leading '#' or whitespace); nothing was exported",
            "correct the address in the directory, or export --format csv or json",
        )
    return f"{address} OK\n"


def _chunked(lines: Iterator[str]) -> Iterator[str]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == _CHUNK:
            yield "".join(chunk)
            chunk.clear()
    if chunk:
        yield "".join(chunk)


def _csv(recipients: Iterator[tuple[str, Recipient]]) -> Iterator[str]:
    """RFC 4180 CSV with a header row (the rules export's dialect: minimal quoting, ``\\n``).
    List members are one cell, separated by spaces (addresses never contain one)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for count, (address, r) in enumerate(recipients, 1):
        members = " ".join(r.members) if r.members is not None else ""
        status = r.status or "active"
        writer.writerow(
            (address, r.kind, status, r.name, r.target, members, r.id, r.username)
        )  # None is written as an empty cell
        if count % _CHUNK == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def iter_state_json(
    domain: str,
    hold: Hold | None,
    recipients: Iterator[tuple[str, Recipient]],
    about: Mapping[str, Any] | None = None,
) -> Iterator[str]:
    """``{"format_version": 1, "domain": …, [about…], "hold": …, "recipients": {address:
    {kind, name, …}}}``: the state's own fields per recipient (as in the state file), sorted
    by address, one recipient a line. ``about`` adds keys (the commit `show` is showing)."""
    head = {"format_version": EXPORT_FORMAT_VERSION, "domain": domain, **(about or {})}
    head["hold"] = hold.to_dict() if hold else None
    yield _dumps(head)[:-1] + ', "recipients": {'
    pieces: list[str] = []
    count = 0
    for count, (address, recipient) in enumerate(recipients, 1):
        comma = "," if count > 1 else ""
        pieces.append(f"{comma}\n  {_dumps(address)}: {_dumps(recipient.to_dict())}")
        if len(pieces) == _CHUNK:
            yield "".join(pieces)
            pieces.clear()
    yield "".join(pieces) + ("\n}}\n" if count else "}}\n")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False, separators=(", ", ": "))
