"""An LDIF export (RFC 2849) as a directory: the offline and demo source.

Parsing is the ``ldif`` package's (folding, base64, comments, CRLF, ``version:``); this module
adds what a directory read needs on top: the base DN scope, the users filter evaluated the way
the server would, errors that name the file, line and entry, and a streaming read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ldif import LDIFParser

from reconciler.directory import Entry, Progress, Value, is_under, normalize_dn
from reconciler.errors import DirectoryError
from reconciler.ldapfilter import Filter, parse_filter
from reconciler.spec import UsersSpec

PROGRESS_EVERY = 1000  # records between two progress reports


class _BlockLines:
    """A binary file that remembers on which line each LDIF record starts.

    The parser reports neither line numbers nor which record failed, only how many records it
    has read; this wrapper numbers records the same way (runs of non-blank, non-comment lines)
    so errors can say "line 120".
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._line = 0
        self._in_record = False
        self._records = 0
        self._starts: dict[int, int] = {}
        self.changetypes: dict[int, str] = {}  # record number -> its changetype: value

    def readline(self) -> bytes:
        line = self._raw.readline()
        if not line:
            return line
        self._line += 1
        if line.rstrip(b"\r\n") == b"":
            self._in_record = False
        elif not self._in_record and not line.startswith((b" ", b"#")):
            self._in_record = True
            # Counted, not len(self._starts): start_of() forgets the records already read.
            self._records += 1
            self._starts[self._records] = self._line
        elif self._in_record and line[:11].lower() == b"changetype:":
            # Change records have lines the parser rejects ("-"): remember what they are.
            self.changetypes[self._records] = line[11:].strip().decode("ascii", "replace")
        return line

    def start_of(self, record: int) -> int:
        """The line where record number ``record`` (1-based) starts; forgets it afterwards."""
        return self._starts.pop(record, self._line)


class LdifSource:
    """Entries of one LDIF file under ``base_dn`` that match the users filter."""

    def __init__(
        self, path: Path, base_dn: str | None, users: UsersSpec, progress: Progress | None = None
    ) -> None:
        self.path = path
        self._progress = progress
        self.base_dn = base_dn
        self._filter = parse_filter(users.filter)
        self._keep = {a.lower() for a in users.attributes()}

    def describe(self) -> str:
        try:
            shown = self.path.resolve().relative_to(Path.cwd())
        except ValueError:
            shown = self.path
        return f"LDIF {shown}"

    def connection_facts(self) -> dict[str, str]:
        return {"file": str(self.path), "base DN": self.base_dn or "(whole file)"}

    def entries(self) -> Iterator[Entry]:
        return self._read(self._filter, self._keep)

    def search(self, search_filter: str, attributes: Sequence[str]) -> Iterator[Entry]:
        """The entries under the base DN matching ``search_filter``, with ``attributes``."""
        return self._read(parse_filter(search_filter), {a.lower() for a in attributes})

    def _read(self, search_filter: Filter, keep: set[str]) -> Iterator[Entry]:
        base = normalize_dn(self.base_dn or "")
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise DirectoryError(
                f"{self.path}: cannot read the LDIF export: {exc.strerror}"
            ) from None
        with raw:
            lines = _BlockLines(raw)
            parser = LDIFParser(lines, encoding="utf8", strict=True)
            records = parser.parse()
            progress = self._progress
            while True:
                try:
                    dn, record = next(records)
                except StopIteration:
                    if progress is not None:
                        progress(parser.records_read, 0)
                    return
                except (ValueError, UnicodeError) as exc:
                    line = lines.start_of(parser.records_read)
                    if parser.records_read in lines.changetypes:
                        changetype = lines.changetypes[parser.records_read]
                        raise DirectoryError(
                            f"{self.path}:{line}: a change record (changetype {changetype!r})",
                            "export the directory's entries (content LDIF), not changes",
                        ) from None
                    raise DirectoryError(
                        f"{self.path}:{line}: unreadable LDIF record: {_reason(exc)}",
                        "fix the export or export it again; nothing was applied",
                    ) from None
                line = lines.start_of(parser.records_read)
                if progress is not None and parser.records_read % PROGRESS_EVERY == 0:
                    progress(parser.records_read, 0)
                if dn is None:
                    continue  # the "version: 1" header parses as a record of its own
                attributes = _lower_keys(record)
                if "changetype" in attributes:
                    raise DirectoryError(
                        f"{self.path}:{line}: {dn} is a change record "
                        f"(changetype {attributes['changetype'][0]!r})",
                        "export the directory's entries (content LDIF), not changes",
                    )
                if not is_under(normalize_dn(dn), base):
                    continue
                if search_filter.matches(_with_ad_categories(attributes)):
                    yield Entry(dn, {k: v for k, v in attributes.items() if k in keep})


def _lower_keys(record: dict[str, list[Value]]) -> dict[str, list[Value]]:
    attributes: dict[str, list[Value]] = {}
    for name, values in record.items():
        if name.lower() in _BINARY:  # the parser made text of any value that decodes as UTF-8
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        attributes.setdefault(name.lower(), []).extend(values)
    return attributes


# Attributes whose values are octet strings, never text (AD's objectGUID and objectSid).
_BINARY = frozenset({"objectguid", "objectsid"})


def _with_ad_categories(attributes: dict[str, list[Value]]) -> dict[str, list[Value]]:
    """Let ``(objectCategory=person)`` match as it does on Active Directory.

    AD stores objectCategory as a DN (CN=Person,CN=Schema,...) but resolves a short name in a
    filter to that DN; an export only has the DN, so the first RDN's value is added as an
    alternative for matching.
    """
    categories = attributes.get("objectcategory")
    if not categories:
        return attributes
    short = [str(c).split(",", 1)[0].partition("=")[2] for c in categories if "=" in str(c)]
    return {**attributes, "objectcategory": [*categories, *short]}


def _reason(exc: Exception) -> str:
    message = str(exc)
    if message == "subsection not found":  # bytes.index() on a line with no colon
        return "a line is not 'attribute: value' (no colon)"
    return message or type(exc).__name__
