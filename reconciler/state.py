"""The state file state/<domain>.yaml: one line per address, canonical, loaded on a fast path.

Each recipient line is ``  address: {json object}``. JSON objects are valid YAML flow mappings,
so the file stays YAML for every other tool, while this module reads and writes it line by line
with ``json`` (ruamel's round-trip loader needs minutes for 100k lines). A file that does not
follow the canonical layout (a hand-resolved merge, say) is still read, through the slower YAML
safe loader, and is rewritten canonically by the next apply.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import json
import operator
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import StateError
from reconciler.recipient import Recipient, canonical_json

# json's own (C) reader of a JSON string's rest: (text, offset after its closing quote).
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

# A key written without quotes: plain YAML-safe characters only, so it can never be misread.
_KEY = r"[a-z0-9][a-z0-9._+=-]*@[a-z0-9][a-z0-9.-]*"
_PLAIN_KEY = re.compile(rf"^{_KEY}$")
_PLAIN_KEYS = re.compile(rf"(?:{_KEY}\n)*+")  # one per line
_PLAIN_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9.-]*$")  # as dump_state writes it
# A JSON string, and the exact recipient lines dump_state writes for mailboxes and aliases:
# lines like these are valid, so loading can keep them as text and parse them only when needed.
_CHARS = r'[^"\\\x00-\x1f]*'  # a run of characters that need no escape
_ESCAPE = r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})'
_STRING = rf'"{_CHARS}(?:{_ESCAPE}{_CHARS})*"'  # unrolled: one greedy run per plain stretch
_CANONICAL_LINE = re.compile(
    rf'\{{"kind": "mailbox"(?:, "name": {_STRING})?(?:, "id": {_STRING})?'
    rf'(?:, "status": "(?:active|disabled)")?(?:, "username": {_STRING})?\}}'
    rf'|\{{"kind": "alias"(?:, "status": "(?:active|disabled)")?, "target": (?!"")'
    rf"{_STRING}\}}"
)


@dataclass(frozen=True)
class Hold:
    """Set by rollback: syncs of the domain are refused until `resume`."""

    reason: str
    since: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "since": self.since}


@dataclass(frozen=True)
class State:
    """What Git records for one domain."""

    domain: str
    recipients: Mapping[str, Recipient] = field(default_factory=dict)
    hold: Hold | None = None


class StoredRecipients(Mapping[str, Recipient]):
    """Recipients as their canonical state lines, made into objects only when asked for.

    A 100k-address state is mostly unchanged between syncs; comparing its lines as text with
    the desired recipients' canonical text spares building (and holding) an object for each.
    Loaded from a canonical file, it keeps just that file's text: walking its lines
    (:meth:`items_text`, sorted as the file is) is string slicing, a lookup by address a
    binary search in the text, and an index by address is built only for many lookups.

    Every line it hands out is known valid: the file was checked whole (:meth:`_file`), or
    line by line as a plan compared it with the directory (:meth:`differences`); a file that
    turns out not to be canonical is parsed by the slower readers then, which report what is
    wrong with it (StateError) or give its lines by address.
    """

    __slots__ = ("_count", "_index", "_lines", "_lookups")

    def __init__(self, lines: Mapping[str, str]) -> None:
        """From canonical lines by address, in any order."""
        self._lines: _FileLines | _UpdatedLines | None = None
        self._index: Mapping[str, str] | None = lines
        self._count: int | None = len(lines)
        self._lookups = 0

    @classmethod
    def _backed_by(cls, lines: _FileLines | _UpdatedLines, count: int | None) -> StoredRecipients:
        stored = cls({})
        stored._lines, stored._index, stored._count = lines, None, count
        return stored

    def _file(self) -> _FileLines | None:
        """The file these lines are read from, once it is known canonical; None when they are
        not a file's. A file found not canonical is parsed by the slower readers, and its lines
        held by address from then on."""
        lines = self._lines
        if not isinstance(lines, _FileLines):
            return None
        if lines.check():
            return lines
        slow = _parse_slowly(lines.text, lines.path, lines.domain).recipients
        assert isinstance(slow, StoredRecipients)
        self._lines, self._index, self._count = None, slow._index, slow._count
        return None

    def items_text(self) -> Iterator[tuple[str, str]]:
        """(address, canonical line) for every recipient, sorted by address."""
        file = self._file()
        if file is not None:
            return file.items()
        if self._lines is not None:
            return self._lines.items()
        assert self._index is not None
        return iter(sorted(self._index.items()))

    def _by_address(self) -> Mapping[str, str]:
        if self._index is None:
            self._index = dict(self.items_text())
        return self._index

    def __getitem__(self, address: str) -> Recipient:
        return Recipient.from_json(self.text_of(address))

    def __iter__(self) -> Iterator[str]:
        file = self._file() if self._index is None else None
        if file is not None:
            return file.addresses()
        if self._index is None:
            return map(_ADDRESS, self.items_text())
        return iter(self._index)

    def __len__(self) -> int:
        if self._count is None:
            file = self._file()
            self._count = file.count if file is not None else sum(1 for _ in self.items_text())
        return self._count

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            self.text_of(address)
        except KeyError:
            return False
        return True

    def text_of(self, address: str) -> str:
        """The canonical line of ``address`` (what Recipient.to_json() gives)."""
        if self._index is None and self._lookups < _LOOKUPS_BEFORE_INDEX:
            file = self._file()
            if file is not None:
                # A few lookups (renames, defaults) search the file; many build the index.
                self._lookups += 1
                line = file.text_of(address)
                if line is None:
                    raise KeyError(address)
                return line
        return self._by_address()[address]

    def differences(
        self, desired: Mapping[str, Recipient]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
        """What turns these recipients into ``desired``: the removed and the updated
        (address, line as stored), and the added addresses, each sorted by address.

        Unchanged recipients are never made into objects: their lines are compared as text
        with the desired recipients' canonical lines. A file's lines are checked as they
        are compared, so a plan never reads a state of 100k lines twice."""
        text_of: Callable[[str], str] = (
            desired.text_of
            if isinstance(desired, StoredRecipients)
            else lambda a: desired[a].to_json()
        )
        addresses = sorted(desired)
        if isinstance(self._lines, _FileLines):
            found = self._lines.differences(addresses, text_of, desired)
            if found is not None:
                self._count = self._lines.count
                return found
        return _merge_join(self.items_text(), addresses, text_of, desired)

    def _spliced(self) -> tuple[int, Iterator[str]] | None:
        """(line count, text of the recipient lines) when they can be cut from a loaded file's
        text (that file, or a view of changes over it), else None."""
        lines = self._lines
        if isinstance(lines, _UpdatedLines):
            file = lines.base._file()
            return file.spliced(sorted(lines.changes.items())) if file is not None else None
        file = self._file()
        return file.spliced([]) if file is not None else None

    def updated(self, changes: Iterable[tuple[str, Recipient | None]]) -> StoredRecipients:
        """These recipients with each (address, recipient or None for removal) applied: a view
        over them, so writing a 100k-line state after a few changes copies nothing."""
        new = {a: r.to_json() if r else None for a, r in changes}
        if isinstance(self._lines, _UpdatedLines):  # a view of a view: one view, changes merged
            lines = _UpdatedLines(self._lines.base, {**self._lines.changes, **new})
        else:
            lines = _UpdatedLines(self, new)
        return StoredRecipients._backed_by(lines, None)


if "_abc_impl" not in vars(StoredRecipients):
    # Compiled with mypyc, the class is made without ABCMeta.__new__, which gives each ABC
    # class caches of its own: it would share Mapping's, and one isinstance() answer about
    # StoredRecipients would be taken as Mapping's (a dict a StoredRecipients, or no Mapping).
    abc._abc_init(StoredRecipients)  # type: ignore[attr-defined]  # ABCMeta.__new__'s own step

_ADDRESS = operator.itemgetter(0)  # of an (address, line) pair
# Lookups by address a loaded file answers by binary search before an index is built.
_LOOKUPS_BEFORE_INDEX = 64
# Lines compared at once with a file's text while they agree (then twice as many, up to the
# maximum); where they do not, line by line.
_SPAN_MIN, _SPAN_MAX = 64, 4096

_Differences = tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]


class _FileLines:
    """The recipient lines of a state file in place: ``text`` from offset ``first`` on, one
    line per recipient, ``"  " key ": " value "\n"``, the key a plain address or a JSON string.

    Loaded without looking at the lines: :meth:`check` looks at all of them once (every line
    of a shape dump_state writes, sorted, no address twice), :meth:`differences` as it
    compares them. Until one of them has said yes, nothing else may be asked."""

    __slots__ = ("checked", "count", "domain", "first", "path", "text")

    def __init__(self, text: str, first: int, path: Path, domain: str) -> None:
        self.text, self.first, self.path, self.domain = text, first, path, domain
        self.checked: bool | None = None  # not looked at yet
        self.count = 0

    def check(self) -> bool:
        """Whether every line is canonical (looked at once, in one regex pass)."""
        if self.checked is None:
            count = _canonical_count(self.text, self.first)
            self.checked, self.count = count is not None, count or 0
        return self.checked

    def _line_at(self, start: int) -> tuple[str, int, int]:
        """(address, offset of its value, offset of the line's end) of the line at ``start``."""
        end = self.text.index("\n", start)
        return (*_split_line(self.text, start, end), end)

    def items(self) -> Iterator[tuple[str, str]]:
        text, start, size, line_at = self.text, self.first, len(self.text), self._line_at
        while start < size:
            address, value, end = line_at(start)
            yield address, text[value:end]
            start = end + 1

    def addresses(self) -> Iterator[str]:
        return map(_ADDRESS, self.items())

    def locate(self, address: str) -> tuple[int, bool]:
        """(where the line of ``address`` starts, True), or where it would go and False: a
        binary search over the text, each probe reading the line around an offset."""
        text, low, high = self.text, self.first, len(self.text)
        while low < high:  # lines starting before low sort before address, from high on not
            start = text.rfind("\n", low - 1, (low + high) // 2) + 1
            found, _, end = self._line_at(start)
            if found < address:
                low = end + 1
            else:
                high = start
        return low, low < len(text) and self._line_at(low)[0] == address

    def text_of(self, address: str) -> str | None:
        start, present = self.locate(address)
        if not present:
            return None
        _, value, end = self._line_at(start)
        return self.text[value:end]

    def spliced(self, changes: list[tuple[str, str | None]]) -> tuple[int, Iterator[str]]:
        """The file's recipient lines with sorted ``changes`` (a new line, or None to drop)
        applied, as (how many lines, their text in pieces): the unchanged stretches between
        changes are slices of the file's text, so a few changes to a big state cost a few
        binary searches, not a pass over every line."""
        located = [(address, line, *self.locate(address)) for address, line in changes]
        total = self.count + sum((line is not None) - present for _, line, _, present in located)
        return total, self._pieces(located)

    def _pieces(self, located: list[tuple[str, str | None, int, bool]]) -> Iterator[str]:
        text, position = self.text, self.first
        for address, line, start, present in located:
            if start > position:
                yield text[position:start]
            if line is not None:
                yield f"  {_key(address)}: {line}\n"
            position = text.index("\n", start) + 1 if present else start
        if position < len(text):  # the file ends with its last recipient line
            yield text[position:]

    def differences(
        self,
        addresses: list[str],
        text_of: Callable[[str], str],
        desired: Mapping[str, Recipient],
    ) -> _Differences | None:
        """What :meth:`StoredRecipients.differences` finds, comparing the file's text with the
        desired recipients' lines (``addresses`` sorted), and checking the file on the way:
        None when a line of it is not canonical.

        A stored line equal to the line dump_state writes for a desired recipient is valid
        by that, and in its place (the desired lines are sorted): lines that agree are
        compared a stretch at a time, as one string. Only the others are matched with the
        canonical line pattern and checked to be in order: the removed, the updated."""
        text, position, size = self.text, self.first, len(self.text)
        starts_with = text.startswith
        removed: list[tuple[str, str]] = []
        updated: list[tuple[str, str]] = []
        added: list[str] = []
        count, previous, at, total, span = 0, "", 0, len(addresses), _SPAN_MIN
        while at < total:
            stop = min(at + span, total)
            wanted = addresses[at:stop]
            # Keys as dump_state writes them: checked for the stretch at once, almost always
            # all plain (written as they are).
            if _PLAIN_KEYS.fullmatch("\n".join(wanted) + "\n"):
                lines = [f"  {a}: {text_of(a)}\n" for a in wanted]
            else:
                lines = [f"  {_key(a)}: {text_of(a)}\n" for a in wanted]
            stretch = "".join(lines)
            if starts_with(stretch, position):
                position += len(stretch)
                count, previous, at = count + stop - at, wanted[-1], stop
                span = min(2 * span, _SPAN_MAX)
                continue
            span = _SPAN_MIN
            for address, line in zip(wanted, lines, strict=True):
                while True:  # the stored lines up to this address's
                    if starts_with(line, position):
                        position, count, previous = position + len(line), count + 1, address
                        break
                    if position == size:
                        added.append(address)
                        break
                    found = _canonical_line(text, position)
                    if found is None:
                        return None
                    stored, value, end = found
                    if stored > address:
                        added.append(address)
                        break
                    if stored <= previous:  # out of order, or twice
                        return None
                    position, count, previous = end, count + 1, stored
                    if stored < address:
                        removed.append((stored, value))
                        continue
                    # The same address, written another way: different only if it parses so.
                    if Recipient.from_json(value) != desired[address]:
                        updated.append((address, value))
                    break
            at = stop
        while position < size:  # stored lines after the last desired address: all removed
            found = _canonical_line(text, position)
            if found is None or found[0] <= previous:
                return None
            previous, value, position = found
            count += 1
            removed.append((previous, value))
        self.checked, self.count = True, count
        return removed, updated, added


def _canonical_line(text: str, start: int) -> tuple[str, str, int] | None:
    """(address, value, offset after the line) of the line at ``start`` when it is exactly
    as dump_state writes it, else None. Mailbox and alias lines are matched with their
    pattern; any other (a list, privileges, a quoted key) is parsed and written again."""
    match = _LINE.match(text, start)
    if match is not None:
        return match[1], match[2], match.end()
    end = text.find("\n", start)
    if end < 0 or not text.startswith("  ", start):
        return None
    try:
        address, value_start = _split_line(text, start, end)
        value = text[value_start:end]
        data = json.loads(value)
        if not isinstance(data, dict) or address != address.lower():
            return None
        line = f"  {_key(address)}: {Recipient.from_dict(data).to_json()}\n"
    except ValueError:  # (json's errors are ValueErrors, and so are Recipient's)
        return None
    return (address, value, end + 1) if text.startswith(line, start) else None


def _split_line(text: str, start: int, end: int) -> tuple[str, int]:
    """(address, offset of its value) of the recipient line ``"  " key ": " value`` from
    ``start`` to ``end``; ValueError when it has no key of either kind."""
    if text.startswith('"', start + 2):  # a quoted key: JSON, and it may hold ": " itself
        address, after = _scanstring(text, start + 3)
        if not text.startswith(": ", after):
            raise ValueError("no ': ' after the quoted key")
        return address, after + 2
    colon = text.index(": ", start, end)
    return text[start + 2 : colon], colon + 2


def _merge_join(
    lines: Iterator[tuple[str, str]],
    addresses: list[str],
    text_of: Callable[[str], str],
    desired: Mapping[str, Recipient],
) -> _Differences:
    """:meth:`StoredRecipients.differences` over stored (address, line)s sorted by address,
    walked side by side with the sorted desired ``addresses``, so no index is built."""
    removed: list[tuple[str, str]] = []
    updated: list[tuple[str, str]] = []
    added: list[str] = []
    wanted = iter(addresses)
    address = next(wanted, None)
    for stored, line in lines:
        while address is not None and address < stored:
            added.append(address)
            address = next(wanted, None)
        if address != stored:
            removed.append((stored, line))
            continue
        # Equal text is equal recipients; different text may still be (a line of the state
        # written another valid way), so only then are both made into objects.
        if line != text_of(stored) and Recipient.from_json(line) != desired[stored]:
            updated.append((stored, line))
        address = next(wanted, None)
    if address is not None:
        added.append(address)
        added += wanted
    return removed, updated, added


def _canonical_count(text: str, position: int) -> int | None:
    """How many lines follow ``position`` when each is a canonical mailbox or alias line and
    their addresses increase strictly (sorted as dump_state writes them: what a merge relies
    on); else None. One pass of finditer over the text in place: each match must start where
    the last one ended (a `(?:line)*` fullmatch keeps backtracking state per line)."""
    previous, count = "", 0
    for match in _LINE.finditer(text, position):
        address = match[1]
        if match.start() != position or address <= previous:
            return None
        previous, position, count = address, match.end(), count + 1
    return count if position == len(text) else None


class _UpdatedLines:
    """Stored recipients with some lines replaced, added or (None) removed, merged on the fly."""

    __slots__ = ("base", "changes")

    def __init__(self, base: StoredRecipients, changes: dict[str, str | None]) -> None:
        self.base, self.changes = base, changes

    def items(self) -> Iterator[tuple[str, str]]:
        return _merged(self.base.items_text(), sorted(self.changes.items()))


def _merged(
    lines: Iterator[tuple[str, str]], changes: list[tuple[str, str | None]]
) -> Iterator[tuple[str, str]]:
    """Sorted ``lines`` with sorted ``changes`` (a new line, or None to drop) merged in."""
    pending = iter(changes)
    change = next(pending, None)
    for address, line in lines:
        while change is not None and change[0] < address:
            if change[1] is not None:
                yield change  # type: ignore[misc]
            change = next(pending, None)
        if change is not None and change[0] == address:
            if change[1] is not None:
                yield change  # type: ignore[misc]
            change = next(pending, None)
        else:
            yield address, line
    while change is not None:
        if change[1] is not None:
            yield change  # type: ignore[misc]
        change = next(pending, None)


def _key(address: str) -> str:
    return address if _PLAIN_KEY.match(address) else canonical_json(address)


def _canonical_items(recipients: Mapping[str, Recipient]) -> Iterator[tuple[str, str]]:
    """(address, canonical line) of each recipient, by address, made one at a time (a first
    apply writes 100k of them; a generator expression here would be a list, compiled)."""
    for address in sorted(recipients):
        yield address, recipients[address].to_json()


def dump_state(state: State, spec_source: str) -> str:
    """The canonical text of a state file: sorted, one recipient per line, byte-stable."""
    return "".join(iter_state_text(state, spec_source))


def iter_state_text(state: State, spec_source: str, lines_per_chunk: int = 4096) -> Iterator[str]:
    """:func:`dump_state`'s text in pieces of a few thousand lines, to write without holding
    the whole file."""
    recipients = state.recipients
    spliced = recipients._spliced() if isinstance(recipients, StoredRecipients) else None
    if spliced is not None:  # lines cut from the file loaded, with the changes put in
        count, pieces = spliced
        yield _header(state, spec_source, empty=not count)
        yield from pieces
        return
    items = (
        recipients.items_text()
        if isinstance(recipients, StoredRecipients)
        else _canonical_items(recipients)
    )
    first = next(items, None)  # (an updated view counts its lines only by walking them)
    yield _header(state, spec_source, empty=first is None)
    if first is None:
        return
    chunk: list[str] = []
    for address, text in itertools.chain((first,), items):
        chunk.append(f"  {_key(address)}: {text}\n")
        if len(chunk) == lines_per_chunk:
            yield "".join(chunk)
            chunk.clear()
    if chunk:
        yield "".join(chunk)


def _header(state: State, spec_source: str, *, empty: bool) -> str:
    hold = canonical_json(state.hold.to_dict()) if state.hold else "null"
    return (
        f"# Managed by reconciler from {spec_source}. Do not edit by hand.\n"
        f"domain: {state.domain}\n"  # validated domain names need no quoting
        f"hold: {hold}\n" + ("recipients: {}\n" if empty else "recipients:\n")
    )


def write_state(path: Path, text: str | Iterable[str], *, durable: bool = True) -> None:
    """Replace ``path`` atomically with ``text`` (or its pieces): readers see the old file or
    the new one, never half. ``durable``: on disk before it replaces the old one (fsync);
    not for a scratch file that a crash may as well lose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a state file is as readable as the repository.
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            if isinstance(text, str):
                out.write(text)
            else:
                out.writelines(text)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def load_state(path: Path, domain: str, *, check: bool = True) -> State:
    """The state of ``domain`` from ``path``; a missing file is a domain never synced.
    ``check``: as for :func:`parse_state`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State(domain)
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: cannot read the state file: {exc}") from None
    return parse_state(text, path, domain, check=check)


def parse_state(text: str, path: Path, domain: str, *, check: bool = True) -> State:
    """Parse state text, fast when canonical, through YAML otherwise.

    ``check=False``: leave the recipient lines of a canonical-looking file to be checked when
    first used (a plan checks them as it compares them): a file found wrong then raises
    StateError only then."""
    state = _parse_whole(text, path, domain, check=check)
    return state if state is not None else _parse_slowly(text, path, domain)


class _NotCanonical(Exception):
    pass


_HEADER = re.compile(r"(?:#[^\n]*\n)*domain: ([a-z0-9][a-z0-9.-]*)\nhold: ([^\n]*)\nrecipients:\n")
_PLAIN_LINE = f"  ({_KEY}): ({_CANONICAL_LINE.pattern})\n"
_LINE = re.compile(_PLAIN_LINE)


def _parse_whole(text: str, path: Path, domain: str, *, check: bool = True) -> State | None:
    """The file exactly as dump_state writes it, kept as that text; None for anything else.

    ``check``: look at every recipient line now (one regex pass, well under a second for
    100k lines); else only at the header and that every line after it is indented, which
    keeps any other key out, and the lines when first used (see :class:`_FileLines`)."""
    header = _HEADER.match(text)
    if header is None or header.group(1) != domain:
        return None
    first = header.end()
    # Every line indented (each newline but the last followed by two spaces): two counts.
    if first < len(text) and (
        not text.endswith("\n") or text.count("\n  ", first - 1) != text.count("\n", first)
    ):
        return None
    try:
        hold = json.loads(header.group(2))
    except ValueError:
        return None
    lines = _FileLines(text, first, path, domain)
    if check and not lines.check():
        return None
    recipients = StoredRecipients._backed_by(lines, lines.count if check else None)
    return State(domain, recipients, _to_hold(hold, path))


def _parse_slowly(text: str, path: Path, domain: str) -> State:
    """Any state text the fast reader does not take: line by line, through YAML otherwise."""
    try:
        data = _parse_canonical(text)
    except _NotCanonical:
        data = _parse_yaml(text, path)
    return _to_state(data, path, domain)


def _parse_canonical(text: str) -> dict[str, Any]:
    """Read the layout :func:`dump_state` writes; raise _NotCanonical on anything else."""
    data: dict[str, Any] = {}
    recipients: dict[str, tuple[int, Any]] = {}
    in_recipients = False
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        if in_recipients and line.startswith("  "):
            key, value = _split_recipient_line(line[2:])
            if key in recipients:
                raise _NotCanonical  # let the YAML loader report the duplicate with its line
            recipients[key] = (number, value)
            continue
        name, sep, value = line.partition(": ")
        if not sep or name not in ("domain", "hold", "recipients") or name in data:
            if line == "recipients:" and "recipients" not in data:
                data["recipients"] = recipients
                in_recipients = True
                continue
            raise _NotCanonical
        if name == "domain" and not _PLAIN_DOMAIN.match(value):
            raise _NotCanonical  # quoted or commented by hand: YAML knows what it means
        try:
            data[name] = value if name == "domain" else json.loads(value)
        except ValueError:
            raise _NotCanonical from None
        in_recipients = False
    return data


def _split_recipient_line(line: str) -> tuple[str, Any]:
    try:
        if line.startswith('"'):
            key, end = json.JSONDecoder().raw_decode(line)
            rest = line[end:]
            if not rest.startswith(": "):
                raise _NotCanonical
            return key, _value_text(rest[2:])
        key, sep, rest = line.partition(": ")
        if not sep or not _PLAIN_KEY.match(key):
            raise _NotCanonical
        return key, _value_text(rest)
    except ValueError:
        raise _NotCanonical from None


def _value_text(text: str) -> str:
    """A recipient line's value, still as text; _to_state checks it."""
    if not (text.startswith("{") and text.endswith("}")):
        raise _NotCanonical
    return text


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        data = YAML(typ="safe").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise StateError(
            f"{where}: the state file is not valid YAML: {exc.problem}",
            "restore it from Git (git checkout -- FILE); state files are written by reconciler",
        ) from None
    except YAMLError as exc:
        raise StateError(f"{path}: the state file is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StateError(f"{path}: the state file is not a mapping")
    recipients = data.get("recipients")
    if isinstance(recipients, dict):
        data["recipients"] = {str(k): (None, v) for k, v in recipients.items()}
    return data


def _to_state(data: dict[str, Any], path: Path, domain: str) -> State:
    if data.get("domain") != domain:
        raise StateError(f"{path}: the state file is for {data.get('domain')!r}, not {domain!r}")
    raw_recipients = data.get("recipients")
    if not isinstance(raw_recipients, dict):
        raise StateError(f"{path}: 'recipients' is missing or not a mapping")
    lines: dict[str, str] = {}
    for address, (line, value) in raw_recipients.items():
        where = f"{path}:{line}" if line else str(path)
        if isinstance(value, str):  # a line of the canonical file, still as text
            if _CANONICAL_LINE.fullmatch(value) and address == address.lower():
                lines[address] = value
                continue
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise StateError(
                    f"{where}: recipient {address}: not a JSON object: {exc}"
                ) from None
        if address != address.lower() or not isinstance(value, dict):
            raise StateError(f"{where}: {address!r} is not a lower-case address with a mapping")
        try:
            lines[address] = Recipient.from_dict(value).to_json()
        except ValueError as exc:
            raise StateError(f"{where}: recipient {address}: {exc}") from None
    return State(domain, StoredRecipients(lines), _to_hold(data.get("hold"), path))


def _to_hold(raw: Any, path: Path) -> Hold | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("reason"), str):
        raise StateError(f"{path}: 'hold' must be null or {{reason, since}}")
    return Hold(reason=raw["reason"], since=str(raw.get("since", "")))


def state_path(state_dir: Path, domain: str) -> Path:
    return state_dir / f"{domain}.yaml"
