"""Directory entries and the sources that produce them.

A source yields :class:`Entry` values one at a time so the mapping can stream; it raises
:class:`~reconciler.errors.DirectoryError` unless it read everything it was asked for, because an
incomplete read must never look like "these people left".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.errors import ConfigError
from reconciler.spec import DomainSpec

Value = str | bytes


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry: its DN and the requested attributes, names lower-cased."""

    dn: str
    attributes: Mapping[str, Sequence[Value]]

    def values(self, attribute: str) -> Sequence[Value]:
        return self.attributes.get(attribute.lower(), ())

    def first(self, attribute: str) -> Value | None:
        values = self.values(attribute)
        return values[0] if values else None


class DirectorySource(Protocol):
    """Anything that can list the entries a spec selects."""

    def describe(self) -> str:
        """Where the entries come from, for messages ("LDIF inventories/data/x.ldif")."""
        ...

    def entries(self) -> Iterator[Entry]:
        """Every matching entry; raises DirectoryError unless the read was complete."""
        ...


def open_source(spec: DomainSpec) -> DirectorySource:
    """The source the spec names."""
    # Imported here so that an LDIF-only run never loads the LDAP client, and the reverse.
    if spec.directory.ldif is not None:
        from reconciler.ldif_source import LdifSource

        return LdifSource(spec.directory.ldif, spec.directory.base_dn, spec.users)
    raise ConfigError(f"{spec.source}: the spec names no directory source (directory.ldif)")


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
