"""Directory entries and the sources that produce them.

A source yields :class:`Entry` values one at a time so the mapping can stream; it raises
:class:`~reconciler.errors.DirectoryError` unless it read everything it was asked for, because an
incomplete read must never look like "these people left".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from reconciler.errors import ConfigError, DirectoryError
from reconciler.spec import DomainSpec

Value = str | bytes
# Told (entries read, pages read) as a read goes on: once a page, or every few thousand records
# of an LDIF file (pages 0), never once an entry. Counts start again with each search.
Progress = Callable[[int, int], None]

log = logging.getLogger("reconciler")


class Entry(NamedTuple):
    """One directory entry: its DN and the requested attributes, names lower-cased.

    A named tuple: a read makes one per entry, and it costs a third of a frozen dataclass."""

    dn: str
    attributes: Mapping[str, Sequence[Value]]

    def values(self, attribute: str) -> Sequence[Value]:
        return self.attributes.get(attribute.lower(), ())

    def first(self, attribute: str) -> Value | None:
        values = self.values(attribute)
        return values[0] if values else None


class ReadInterrupted(DirectoryError):
    """The server being read failed part-way; the source has moved on to its next server.

    Entries already yielded must be thrown away: call ``entries()`` again to read everything
    from the start (page 1) on the next server.
    """


class DirectorySource(Protocol):
    """Anything that can list the entries a spec selects."""

    def describe(self) -> str:
        """Where the entries come from, for messages ("LDIF inventories/data/x.ldif")."""
        ...

    def connection_facts(self) -> dict[str, str]:
        """Facts about the last read for `test-connection` (server, TLS, bind identity…)."""
        ...

    def entries(self) -> Iterator[Entry]:
        """Every matching entry; raises DirectoryError unless the read was complete, and
        ReadInterrupted when the read must start over on another server."""
        ...

    def search(self, search_filter: str, attributes: Sequence[str]) -> Iterator[Entry]:
        """Every entry under the base DN matching ``search_filter`` (groups, lists, members
        named by name), with the same completeness promise as :meth:`entries`."""
        ...


def import_ldap_client() -> None:
    """Import the LDAP client before its first use (a tenth of a second, mostly ldap3's), when
    the time is free: while the specs are checked in a child process (see reconcile.py)."""
    import reconciler.ldap_source  # noqa: F401


def open_source(spec: DomainSpec, progress: Progress | None = None) -> DirectorySource:
    """The source the spec names; ``progress`` is told how far its reads have got."""
    # Imported here so that an LDIF-only run never loads the LDAP client, and the reverse.
    if spec.directory.ldif is not None:
        from reconciler.ldif_source import LdifSource

        return LdifSource(spec.directory.ldif, spec.directory.base_dn, spec.users, progress)
    if spec.directory.servers:
        from reconciler.ldap_source import LdapSource
        from reconciler.secrets import resolve_secret

        reference = spec.directory.password
        password = (
            resolve_secret(reference, spec.source.parent, f"{spec.source}: directory.password")
            if reference
            else None
        )
        if not spec.directory.verify_certificate:
            log.warning(
                "%s: directory.verify_certificate is false: the server's identity is not "
                "checked, and the bind password could be sent to an impostor",
                spec.source,
            )
        return LdapSource(spec.directory, spec.users, password, progress)
    raise ConfigError(f"{spec.source}: the spec names no directory (servers or ldif)")


_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def normalize_dn(dn: str) -> str:
    """A comparable form of a DN: RDNs trimmed, types and values lower-cased.

    Good enough to decide whether an entry lies under a base DN; it does not unescape
    hex pairs, so two spellings of the same escaped value may still differ.
    """
    if not dn.strip():
        return ""  # the root DSE: every entry is under it
    rdns = []
    for rdn in _UNESCAPED_COMMA.split(dn.strip()):
        attr, _, value = rdn.partition("=")
        rdns.append(f"{attr.strip().lower()}={value.strip().lower()}")
    return ",".join(rdns)


def is_under(dn: str, base: str) -> bool:
    """True when ``dn`` is ``base`` or below it (both normalized)."""
    return dn == base or dn.endswith("," + base) or not base
