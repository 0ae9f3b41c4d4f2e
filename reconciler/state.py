"""The state file state/<domain>.yaml: one line per address, canonical, loaded on a fast path.

Each recipient line is ``  address: {json object}``. JSON objects are valid YAML flow mappings,
so the file stays YAML for every other tool, while this module reads and writes it line by line
with ``json`` (ruamel's round-trip loader needs minutes for 100k lines). A file that does not
follow the canonical layout (a hand-resolved merge, say) is still read, through the slower YAML
safe loader, and is rewritten canonically by the next apply.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import os
import re
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import StateError
from reconciler.recipient import Recipient, canonical_json

# A key written without quotes: plain YAML-safe characters only, so it can never be misread.
_PLAIN_KEY = re.compile(r"^[a-z0-9][a-z0-9._+=-]*@[a-z0-9][a-z0-9.-]*$")
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
    Loaded from a canonical file, it keeps just that file's text and where each line's value
    starts and ends, so walking its lines (:meth:`items_text`, sorted as the file is) is string
    slicing, not parsing; an address index is built only when something asks by address. Every
    line held here is known valid: it either has the exact canonical shape or was parsed and
    checked when loaded.
    """

    __slots__ = ("_count", "_index", "_lines")

    def __init__(self, lines: Mapping[str, str]) -> None:
        """From canonical lines by address, in any order."""
        self._lines: _FileLines | _UpdatedLines | None = None
        self._index: Mapping[str, str] | None = lines
        self._count: int | None = len(lines)

    @classmethod
    def _backed_by(cls, lines: _FileLines | _UpdatedLines, count: int | None) -> StoredRecipients:
        stored = cls.__new__(cls)
        stored._lines, stored._index, stored._count = lines, None, count
        return stored

    def items_text(self) -> Iterator[tuple[str, str]]:
        """(address, canonical line) for every recipient, sorted by address."""
        if self._lines is not None:
            return self._lines.items()
        assert self._index is not None
        return iter(sorted(self._index.items()))

    def _by_address(self) -> Mapping[str, str]:
        if self._index is None:
            self._index = dict(self.items_text())
        return self._index

    def __getitem__(self, address: str) -> Recipient:
        return Recipient.from_dict(json.loads(self._by_address()[address]))

    def __iter__(self) -> Iterator[str]:
        if self._index is None and isinstance(self._lines, _FileLines):
            return self._lines.addresses()
        if self._index is None:
            return (address for address, _ in self.items_text())
        return iter(self._index)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.items_text())
        return self._count

    def __contains__(self, address: object) -> bool:
        return address in self._by_address()

    def text_of(self, address: str) -> str:
        """The canonical line of ``address`` (what Recipient.to_json() gives)."""
        return self._by_address()[address]

    def _spliced(self) -> tuple[int, Iterator[str]] | None:
        """(line count, text of the recipient lines) when they can be cut from a loaded file's
        text (that file, or a view of changes over it), else None."""
        lines = self._lines
        if isinstance(lines, _FileLines):
            return lines.spliced([])
        if isinstance(lines, _UpdatedLines) and isinstance(lines.base._lines, _FileLines):
            return lines.base._lines.spliced(sorted(lines.changes.items()))
        return None

    def updated(self, changes: Iterable[tuple[str, Recipient | None]]) -> StoredRecipients:
        """These recipients with each (address, recipient or None for removal) applied: a view
        over them, so writing a 100k-line state after a few changes copies nothing."""
        new = {a: r.to_json() if r else None for a, r in changes}
        if isinstance(self._lines, _UpdatedLines):  # a view of a view: one view, changes merged
            lines = _UpdatedLines(self._lines.base, {**self._lines.changes, **new})
        else:
            lines = _UpdatedLines(self, new)
        return StoredRecipients._backed_by(lines, None)


class _FileLines:
    """The recipient lines of a canonical state file, in place: ``text`` and, per line, the
    offsets where its value (the JSON object) starts and ends. Each line reads
    ``"  " address ": " value "\n"``, so the address is the text between the line's start + 2
    and the value's start - 2, and the next line starts one past the value's end."""

    __slots__ = ("ends", "first", "starts", "text")

    def __init__(self, text: str, first: int) -> None:
        self.text, self.first = text, first
        # Unsigned 32-bit offsets while the text allows (a 1M-user state is ~350 MB).
        code = "I" if len(text) < 2**32 else "Q"
        self.starts, self.ends = array(code), array(code)

    def items(self) -> Iterator[tuple[str, str]]:
        text, line = self.text, self.first
        for start, end in zip(self.starts, self.ends, strict=True):
            yield text[line + 2 : start - 2], text[start:end]
            line = end + 1

    def addresses(self) -> Iterator[str]:
        text, line = self.text, self.first
        for start, end in zip(self.starts, self.ends, strict=True):
            yield text[line + 2 : start - 2]
            line = end + 1

    def _line_start(self, index: int) -> int:
        return self.first if index == 0 else self.ends[index - 1] + 1

    def _address_at(self, index: int) -> str:
        return self.text[self._line_start(index) + 2 : self.starts[index] - 2]

    def spliced(self, changes: list[tuple[str, str | None]]) -> tuple[int, Iterator[str]]:
        """The file's recipient lines with sorted ``changes`` (a new line, or None to drop)
        applied, as (how many lines, their text in pieces): the unchanged stretches between
        changes are slices of the file's text, so a few changes to a big state cost a few
        binary searches, not a pass over every line."""
        count = len(self.ends)
        located = []
        for address, line in changes:
            index = bisect.bisect_left(range(count), address, key=self._address_at)
            present = index < count and self._address_at(index) == address
            located.append((address, line, index, present))
        total = count + sum((line is not None) - present for _, line, _, present in located)
        return total, self._pieces(located)

    def _pieces(self, located: list[tuple[str, str | None, int, bool]]) -> Iterator[str]:
        text, position = self.text, self.first
        for address, line, index, present in located:
            start = self._line_start(index)
            if start > position:
                yield text[position:start]
            if line is not None:
                yield f"  {_key(address)}: {line}\n"
            position = self.ends[index] + 1 if present else start
        if position < len(text):  # the file ends with its last recipient line
            yield text[position:]


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
        else ((a, recipients[a].to_json()) for a in sorted(recipients))
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


def write_state(path: Path, text: str | Iterable[str]) -> None:
    """Replace ``path`` atomically with ``text`` (or its pieces): readers see the old file or
    the new one, never half."""
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
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def load_state(path: Path, domain: str) -> State:
    """The state of ``domain`` from ``path``; a missing file is a domain never synced."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State(domain)
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: cannot read the state file: {exc}") from None
    return parse_state(text, path, domain)


def parse_state(text: str, path: Path, domain: str) -> State:
    """Parse state text, fast when canonical, through YAML otherwise."""
    state = _parse_whole(text, path, domain)
    if state is not None:
        return state
    try:
        data = _parse_canonical(text)
    except _NotCanonical:
        data = _parse_yaml(text, path)
    return _to_state(data, path, domain)


class _NotCanonical(Exception):
    pass


_HEADER = re.compile(r"(?:#[^\n]*\n)*domain: ([a-z0-9][a-z0-9.-]*)\nhold: ([^\n]*)\nrecipients:\n")
_PLAIN_LINE = f"  ([a-z0-9][a-z0-9._+=-]*@[a-z0-9][a-z0-9.-]*): ({_CANONICAL_LINE.pattern})\n"
_LINE = re.compile(_PLAIN_LINE)


def _parse_whole(text: str, path: Path, domain: str) -> State | None:
    """The file exactly as dump_state writes it, checked in one regex pass over the text (a
    100k-line state in well under a second) and kept as that text; None for anything else."""
    header = _HEADER.match(text)
    if header is None or header.group(1) != domain:
        return None
    # One pass of finditer over the text in place (no sliced copy, no list). Each match must
    # start where the last one ended: a `(?:line)*` fullmatch would do the same check but
    # keeps regex backtracking state per line (260 MB at 100k lines). Strictly increasing
    # addresses: sorted as dump_state writes them (what a merge-join relies on), no duplicate.
    position = header.end()
    lines = _FileLines(text, position)
    add_start, add_end = lines.starts.append, lines.ends.append
    previous = ""
    for match in _LINE.finditer(text, position):
        address = match[1]
        if match.start() != position or address <= previous:
            return None
        previous, position = address, match.end()
        add_start(match.start(2))
        add_end(position - 1)
    if position != len(text):
        return None  # a line of another shape: the slower readers
    try:
        hold = json.loads(header.group(2))
    except ValueError:
        return None
    recipients = StoredRecipients._backed_by(lines, len(lines.ends))
    return State(domain, recipients, _to_hold(hold, path))


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
