"""Directory entries + spec → the desired recipients of one domain (pure, one streaming pass)."""

from __future__ import annotations

import base64
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from reconciler.directory import Entry, Value
from reconciler.recipient import Recipient
from reconciler.spec import DomainSpec

# One "@", no white space, a domain of non-empty dot-separated labels (a final dot allowed).
_ADDRESS = re.compile(r"([^\s@]+)@((?:[^\s@.]+\.)*[^\s@.]+)\.?")

# Reasons an address from the directory is not a recipient, as counted in the plan.
FOREIGN_DOMAIN = "foreign domain"
EXCLUDED = "excluded"
INVALID = "invalid address"
NO_ADDRESS = "entry without address"


@dataclass(frozen=True)
class Conflict:
    """An address that two different entries claim; never resolved silently."""

    address: str
    dns: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.address} is claimed by {len(self.dns)} entries: " + "; ".join(self.dns)


@dataclass
class MappingResult:
    """What the mapping made of the directory: recipients, and what it left out and why."""

    recipients: dict[str, Recipient] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # address -> DN that produced it
    dropped: Counter[str] = field(default_factory=Counter)
    conflicts: dict[str, set[str]] = field(default_factory=dict)
    entries_without_id: int = 0
    entries_read: int = 0

    def conflict_list(self) -> tuple[Conflict, ...]:
        return tuple(Conflict(a, tuple(sorted(d))) for a, d in sorted(self.conflicts.items()))


def map_entries(entries: Iterable[Entry], spec: DomainSpec) -> MappingResult:
    """Map every entry to its mailbox and aliases in one pass; only the result is kept."""
    result = MappingResult()
    map_user = _UserMapper(spec, result).map
    for entry in entries:
        result.entries_read += 1
        map_user(entry)
    for address in result.conflicts:
        result.recipients.pop(address, None)
    return result


class _UserMapper:
    """The per-entry mapping with everything the spec implies looked up once: it runs for
    every entry of directories with hundreds of thousands of them."""

    def __init__(self, spec: DomainSpec, result: MappingResult) -> None:
        users = spec.users
        self.spec, self.result = spec, result
        self.mail = users.mail_attribute.lower()
        self.alias_attributes = tuple(a.lower() for a in users.alias_attributes)
        self.name = users.name_attribute.lower() if users.name_attribute else None
        self.managed = spec.managed_domains
        self.excludes = spec.excludes if spec.exclude else None

    def map(self, entry: Entry) -> None:
        result, attributes = self.result, entry.attributes
        mail = attributes.get(self.mail, ())
        addresses: list[str] = []
        for attribute in self.alias_attributes:
            addresses += _mail_values(attributes.get(attribute, ()))
        primary_raw = mail[0] if mail else None
        if primary_raw is None:
            # A proxyAddresses "SMTP:" value is the primary address when there is no mail.
            primary_raw = next(
                (v for a in self.alias_attributes for v in _primary_values(entry.values(a))),
                None,
            )
        if primary_raw is None:
            result.dropped[NO_ADDRESS] += 1
            return
        primary = _normalize(primary_raw)
        if primary is None:
            result.dropped[INVALID] += 1
            return

        entry_id = _identity(entry, self.spec.users.id_attribute)
        if entry_id is None:
            result.entries_without_id += 1
            entry_id = entry.dn
        if self.excludes is not None and self.excludes(primary):
            # Excluding a person (an erasure request, say) excludes every address of theirs:
            # an alias left behind would still name them as its target.
            others = {_normalize(a) for a in (*mail, *addresses)}
            result.dropped[EXCLUDED] += len(others - {None, primary}) + 1
            return
        if self._accept(primary):
            name = attributes.get(self.name, ()) if self.name else ()
            mailbox = Recipient("mailbox", _text(name[0]) if name else None, entry_id, "active")
            _claim(primary, mailbox, entry.dn, result)

        alias = Recipient("alias", target=primary)  # one object serves all of them
        seen = {primary}
        for raw in (*(v for v in mail[1:] if isinstance(v, str)), *addresses):
            if raw == primary_raw:
                continue  # AD repeats the mail attribute as "SMTP:…": nothing to normalize
            address = _normalize(raw)
            if address is None:
                result.dropped[INVALID] += 1
            elif address not in seen:
                seen.add(address)
                if self._accept(address):
                    _claim(address, alias, entry.dn, result)

    def _accept(self, address: str) -> bool:
        """Whether the address is in a managed domain and not excluded; counts it when not."""
        if address[address.index("@") + 1 :] not in self.managed:
            self.result.dropped[FOREIGN_DOMAIN] += 1
            return False
        if self.excludes is not None and self.excludes(address):
            self.result.dropped[EXCLUDED] += 1
            return False
        return True


def _claim(address: str, recipient: Recipient, dn: str, result: MappingResult) -> None:
    owner = result.owners.get(address)
    if owner is not None and owner != dn:
        result.conflicts.setdefault(address, {owner}).add(dn)
        return
    result.owners[address] = dn
    result.recipients[address] = recipient


def _mail_values(values: Iterable[Value]) -> list[str]:
    """Addresses in a multi-valued attribute: plain values and smtp:-prefixed ones.

    "SMTP:" marks the primary address, "smtp:" a secondary one; X500:, SIP:, X400: … are
    other kinds of address and are skipped."""
    found = []
    for value in values:
        if type(value) is not str:
            continue
        colon = value.find(":")
        if colon < 0:
            found.append(value)
        elif colon == 4 and value[:4].lower() == "smtp":
            found.append(value[5:])
        elif not _is_prefix(value[:colon]):
            found.append(value)  # a colon, but not after an address type: keep it as written
    return found


def _is_prefix(text: str) -> bool:
    return text.isascii() and text.isalnum() and text[0].isalpha()


def _primary_values(values: Iterable[Value]) -> Iterable[str]:
    for value in values:
        if isinstance(value, str) and value.startswith("SMTP:"):
            yield value[5:]


def _normalize(value: Value) -> str | None:
    """The stored form of an address (trimmed, lower case), or None when it is not one."""
    if not isinstance(value, str):
        return None
    address = value.strip().lower()
    match = _ADDRESS.fullmatch(address)
    if match is None:
        return None
    if address.isascii() and address[-1] != ".":  # the usual case: already in stored form
        return address
    local, domain = match.groups()
    if domain.isascii():  # the idna codec is slow: only IDN domains need it
        return f"{local}@{domain}"
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local}@{domain}"


def _identity(entry: Entry, attribute: str | None) -> str | None:
    """The entry's stable id as text: AD objectGUID in its usual form, other binaries base64."""
    if attribute is None:
        return None
    value = entry.first(attribute)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if attribute.lower() == "objectguid" and len(value) == 16:
        return str(uuid.UUID(bytes_le=value))
    return "base64:" + base64.b64encode(value).decode("ascii")


def _text(value: Value | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
