"""What Git remembers of the state: the syncs, one address through time, a domain as of a date.

Every commit that changed ``state/<domain>.yaml`` is a version of the domain's recipients.
Reading an address's history never parses a version whole: the state holds one line per
address, ``  address: {json}`` (DESIGN.md §4), so ``git grep`` finds the lines that mention the
address in every version at once (in Git, in C: 100 versions of 10 MiB never reach Python) and
only the address's own line is parsed. A version not in that layout (edited by hand) is parsed
whole, through the state module, so the answer is the same either way.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reconciler.errors import ConfigError, StateError
from reconciler.export import iter_state_json, sorted_recipients
from reconciler.gitstore import Commit, GitStore
from reconciler.plan import Change, summarize
from reconciler.printable import shown, shown_value
from reconciler.recipient import Recipient, canonical_json
from reconciler.state import State, parse_state

if TYPE_CHECKING:  # reconcile imports this module; the workspace is only passed through here
    from reconciler.reconcile import Workspace

HISTORY_FORMAT_VERSION = 1


# --- the syncs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sync:
    """One commit that changed a domain's state, as its trailers describe it."""

    domain: str
    commit: Commit

    @property
    def action(self) -> str:
        """apply, rollback, resume … ; "manual" for a commit reconciler did not write."""
        return self.commit.trailers.get("Reconciler-Action", "manual")

    @property
    def counts(self) -> str:
        return self.commit.trailers.get("Reconciler-Counts", "")

    @property
    def rollback_to(self) -> str | None:
        return self.commit.trailers.get("Reconciler-Rollback-To")

    def describe(self) -> str:
        """``DATE  COMMIT  DOMAIN  ACTION  COUNTS[  rollback to REV]``."""
        line = f"{self.commit.date}  {self.commit.short}  {self.domain}  {self.action:<8}"
        line += f"  {self.counts}"
        if self.rollback_to:
            line += f"  rollback to {self.rollback_to[:10]}"
        return line.rstrip()

    def to_dict(self) -> dict[str, Any]:
        counts = {}
        for part in self.counts.split():
            name, _, number = part.partition("=")
            counts[name] = int(number) if number.isdigit() else number
        return {
            "domain": self.domain,
            "commit": self.commit.sha,
            "date": self.commit.date,
            "committed": self.commit.committed,
            "action": self.action,
            "counts": counts,
            "rollback": self.rollback_to is not None,
            "rollback_to": self.rollback_to,
            "subject": self.commit.subject,
        }


def history(workspace: Workspace, domains: Sequence[str]) -> list[tuple[str, Commit]]:
    """(domain, commit) for every commit that changed a domain's state, newest first."""
    with workspace.store() as store:
        names = _domains(workspace, domains)
        entries = [(d, c) for d in names for c in store.log(_path(workspace, d))]
    # Compare instants, not the text of dates written in different time zones.
    return sorted(entries, key=lambda e: datetime.fromisoformat(e[1].date), reverse=True)


def syncs(workspace: Workspace, domains: Sequence[str]) -> list[Sync]:
    """Every change of the named domains' states (all with a state file when none are named),
    newest first."""
    return [Sync(domain, commit) for domain, commit in history(workspace, domains)]


def syncs_json(entries: Sequence[Sync]) -> str:
    document = {
        "format_version": HISTORY_FORMAT_VERSION,
        "syncs": [entry.to_dict() for entry in entries],
    }
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


def _domains(workspace: Workspace, domains: Sequence[str]) -> list[str]:
    return list(domains) or sorted(p.stem for p in workspace.state_dir.glob("*.yaml"))


def _path(workspace: Workspace, domain: str) -> Path:
    return workspace.state_file(domain)


# --- one address through time -----------------------------------------------------------------

Event = Literal["appeared", "changed", "disappeared"]


@dataclass(frozen=True)
class AddressEvent:
    """A version of a domain's state in which ``address`` appeared, changed or disappeared."""

    domain: str
    address: str
    sync: Sync
    event: Event
    old: Recipient | None
    new: Recipient | None

    def field_changes(self) -> list[tuple[str, Any, Any]]:
        return Change("update", self.address, self.old, self.new).field_changes()

    def describe(self) -> str:
        commit = self.sync.commit
        head = f"{commit.date}  {commit.short}  {self.domain}  {self.sync.action:<8}  {self.event}"
        if self.event == "changed":
            changes = self.field_changes()
            details = ", ".join(f"{f}: {shown_value(o)} → {shown_value(n)}" for f, o, n in changes)
        else:
            recipient = self.new or self.old
            assert recipient is not None
            details = summarize(recipient)
        return f"{head}  {details}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "address": self.address,
            "commit": self.sync.commit.sha,
            "date": self.sync.commit.date,
            "action": self.sync.action,
            "event": self.event,
            "old": self.old.to_dict() if self.old else None,
            "new": self.new.to_dict() if self.new else None,
            "changes": [{"field": f, "old": o, "new": n} for f, o, n in self.field_changes()]
            if self.event == "changed"
            else [],
        }


def address_domains(workspace: Workspace, address: str, domains: Sequence[str]) -> list[str]:
    """Where to look for ``address``: the named domains, else its own domain's state when there
    is one, else every domain with a state (it may be an alias in a ``domain_aliases`` domain)."""
    if domains:
        return list(domains)
    own = address.rpartition("@")[2]
    if _path(workspace, own).exists():
        return [own]
    return _domains(workspace, ())


def address_history(
    workspace: Workspace, address: str, domains: Sequence[str]
) -> list[AddressEvent]:
    """When ``address`` (the stored form: lower case, ASCII domain) appeared, changed and
    disappeared in the states of ``domains``: domain by domain, each oldest first (in the
    order of its history, which dates rewritten by a rebase do not change)."""
    events: list[AddressEvent] = []
    with workspace.store() as store:
        for domain in domains:
            events += _address_events(store, _path(workspace, domain), domain, address)
    return events


def _address_events(
    store: GitStore, path: Path, domain: str, address: str
) -> Iterator[AddressEvent]:
    commits = list(reversed(store.log(path)))
    # Only the lines that mention the address come out of Git, for every version at once.
    mentions = store.grep_at([c.sha for c in commits], path, address)
    previous: Recipient | None = None
    for commit in commits:
        try:
            current = recipient_in(
                mentions.get(commit.sha, []),
                address,
                functools.partial(_text_at, store, commit.sha, path),
                path,
                domain,
            )
        except StateError as exc:
            raise StateError(f"{path} at {commit.short}: {exc.message}", exc.hint) from None
        event: Event | None = None
        if previous is None and current is not None:
            event = "appeared"
        elif previous is not None and current is None:
            event = "disappeared"
        elif previous != current:
            event = "changed"
        if event is not None:
            yield AddressEvent(domain, address, Sync(domain, commit), event, previous, current)
        previous = current


def _text_at(store: GitStore, sha: str, path: Path) -> str:
    return store.read_at(sha, path) or ""


def recipient_in(
    mentions: Sequence[str], address: str, whole: Callable[[], str], path: Path, domain: str
) -> Recipient | None:
    """The recipient ``address`` has in one version of a state file, or None, from the lines
    of that version that mention it.

    The usual case: one of them is the address's canonical line ``  KEY: {…}`` (the key plain
    or a JSON string), and only that line is parsed. A version where the address stands
    where a key could be, but not in that shape (edited by hand), is parsed whole (the text
    ``whole()`` gives); one where it is only an alias's target or a list's member, or not
    mentioned at all, does not hold it."""
    keys = {f"  {key}: " for key in (address, canonical_json(address))}
    unsure = False
    for line in mentions:
        for key in keys:
            if line.startswith(key):
                try:
                    return Recipient.from_json(line[len(key) :])
                except (ValueError, AttributeError, TypeError):
                    unsure = True  # not a one-line JSON object: the state parser will say
        unsure = unsure or _keyed(line, address)
    if not unsure:
        return None
    return parse_state(whole(), path, domain).recipients.get(address)


def _keyed(line: str, address: str) -> bool:
    """Does ``address`` stand as a mapping key on ``line`` (at its start, perhaps indented or
    quoted otherwise, before a colon)? As an alias's target or a list's member it follows
    another key and is followed by a quote and a comma or bracket instead."""
    rest = line.lstrip(" \t'\"?")
    return rest.startswith(address) and rest[len(address) :].lstrip("'\"").startswith(":")


# --- a domain as of a revision or a date ------------------------------------------------------

_DATE_LIKE = re.compile(r"\d{4}-\d\d-\d\d(?:[T ].*)?")


def parse_instant(text: str) -> int | None:
    """The Unix time ``text`` names when it is an ISO date or date and time, None when it
    looks like no date (a revision then); ValueError for a malformed date.

    A date alone means the end of that day; a time without an offset is UTC, so the answer
    does not depend on the machine's time zone."""
    if not _DATE_LIKE.fullmatch(text):
        return None
    value = datetime.fromisoformat(text)
    if len(text) == 10:
        value = datetime.combine(value.date(), time.max)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return math.floor(value.timestamp())


@dataclass(frozen=True)
class Snapshot:
    """A domain's committed state at one commit (the last to change it by a revision or date)."""

    domain: str
    sync: Sync
    state: State
    as_of: int | None  # the instant asked for, if a date was

    def lines(self) -> Iterator[str]:
        commit = self.sync.commit
        head = f"{self.domain} at commit {commit.sha} of {commit.committed} ({self.sync.action})"
        if self.as_of is not None:
            head += f", the last change at or before {_iso(self.as_of)}"
        yield head
        if self.state.hold is not None:
            yield f"on hold: {self.state.hold.reason} (since {self.state.hold.since})"
        count = 0
        for address, recipient in sorted_recipients(self.state.recipients):
            yield f"  {shown(address)}  {summarize(recipient)}"
            count += 1
        yield f"{count} recipient{'' if count == 1 else 's'}"

    def json_chunks(self) -> Iterator[str]:
        commit = self.sync.commit
        about = {
            "commit": commit.sha,
            "committed": commit.committed,
            "action": self.sync.action,
            "as_of": None if self.as_of is None else _iso(self.as_of),
        }
        recipients = sorted_recipients(self.state.recipients)
        return iter_state_json(self.domain, self.state.hold, recipients, about)


def _iso(instant: int) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


def snapshot(workspace: Workspace, domain: str, at: str | None) -> Snapshot:
    """The state of ``domain`` as committed at revision ``at``, as of the date ``at``, or at
    HEAD; ConfigError / GitError when there is none."""
    path = _path(workspace, domain)
    as_of = parse_instant(at) if at else None
    rev = at if at and as_of is None else None
    with workspace.store() as store:
        found = store.log(path, limit=1, rev=rev, before=as_of)
        if not found:
            raise _no_state(store, path, domain, at)
        commit = found[0]
        text = store.read_at(commit.sha, path)
        if text is None:
            raise ConfigError(
                f"{domain}: {store.relative(path)} was deleted by commit {commit.short} "
                f"of {commit.committed}, the last change at or before {at or 'HEAD'}"
            )
        try:
            state = parse_state(text, path, domain)
        except StateError as exc:
            raise StateError(f"{path} at {commit.short}: {exc.message}", exc.hint) from None
    return Snapshot(domain, Sync(domain, commit), state, as_of)


def _no_state(store: GitStore, path: Path, domain: str, at: str | None) -> ConfigError:
    relative = store.relative(path)
    commits = store.log(path)
    if not commits:
        return ConfigError(
            f"{domain} has no committed state ({relative} is in no commit)",
            "check the domain name; `reconciler history` lists the domains with a state",
        )
    first = commits[-1]
    return ConfigError(
        f"{domain} had no state yet at {at}: the first commit of {relative} is "
        f"{first.short} of {first.committed}",
        "give a later date or revision",
    )
