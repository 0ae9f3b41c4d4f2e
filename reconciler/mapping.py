"""Directory entries + spec → the desired recipients of one domain (pure, one streaming pass).

A user entry gives a mailbox (its mail attribute, else the "SMTP:" primary of an alias attribute,
else a mailbox rule) and aliases (further mail values, alias attributes, alias rules). Groups
(:mod:`reconciler.groups`) narrow the users to members of named groups and give distribution
lists their members. Every address goes through :func:`reconciler.addresses.normalize`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.addresses import (
    identity,
    invalid_reason,
    mail_values,
    normalize,
    plain_domains,
    primary_values,
    text,
    usual_address,
)
from reconciler.directory import Entry, Value, normalize_dn
from reconciler.disabled import disabled_matcher
from reconciler.ldapfilter import Filter
from reconciler.printable import shown
from reconciler.recipient import Recipient
from reconciler.rules import compile_rules
from reconciler.spec import DomainSpec

# A named tuple's own constructor is a Python function: tuple.__new__ makes one in C.
_new = tuple.__new__

# Reasons an address from the directory is not a recipient, as counted in the plan.
FOREIGN_DOMAIN = "foreign domain"
EXCLUDED = "excluded"
INVALID = "invalid address"
NO_ADDRESS = "entry without address"
DISABLED = "disabled account"
NOT_MEMBER = "not in only_members_of"


@dataclass(frozen=True)
class Conflict:
    """Directory data that cannot be mapped without guessing; never resolved silently."""

    address: str
    dns: tuple[str, ...]
    reason: str = "claimed"  # claimed (by several entries) | loop (lists containing each other)

    def describe(self) -> str:
        dns = "; ".join(map(shown, self.dns))  # (DNs as the directory sends them)
        if self.reason == "loop":
            return f"{shown(self.address)} is in a loop of lists containing each other: {dns}"
        return f"{shown(self.address)} is claimed by {len(self.dns)} entries: {dns}"


@dataclass(frozen=True)
class InvalidValue:
    """A value that is not an address, skipped: where it is and why."""

    dn: str
    attribute: str
    value: str
    reason: str

    def describe(self) -> str:
        return f"{shown(self.dn)}: {self.attribute} {self.value!r} skipped: {self.reason}"


@dataclass(frozen=True)
class TraceEvent:
    """For `explain`: what became of one address of one entry."""

    address: str
    dn: str
    origin: str  # the attribute or rule it came from
    outcome: str  # "mailbox", "alias of …", "list", or why it was dropped


@dataclass
class MappingResult:
    """What the mapping made of the directory: recipients, and what it left out and why."""

    recipients: dict[str, Recipient] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # address -> DN that produced it
    dropped: Counter[str] = field(default_factory=Counter)
    conflicts: dict[str, set[str]] = field(default_factory=dict)
    loops: dict[str, tuple[str, ...]] = field(default_factory=dict)  # list address -> DNs
    invalid: list[InvalidValue] = field(default_factory=list)
    entries_without_id: int = 0
    entries_read: int = 0
    primary_of: dict[str, str] = field(default_factory=dict)  # normalized DN -> mailbox
    trace: list[TraceEvent] | None = None
    admitted_by: Mapping[str, str] | None = None  # only_members_of: DN -> through which group

    def conflict_list(self) -> tuple[Conflict, ...]:
        claimed = [Conflict(a, tuple(sorted(d))) for a, d in sorted(self.conflicts.items())]
        loops = [Conflict(a, dns, "loop") for a, dns in sorted(self.loops.items())]
        return (*claimed, *loops)


def map_entries(
    entries: Iterable[Entry],
    spec: DomainSpec,
    *,
    members: Mapping[str, str] | None = None,
    keep_primaries: bool = False,
    trace: str | None = None,
    lists: Filter | None = None,
) -> MappingResult:
    """Map every user entry to its mailbox and aliases in one pass; only the result is kept.

    ``members``: with only_members_of, the normalized DNs admitted (-> how, for `explain`);
    ``keep_primaries`` records each entry's mailbox for the lists; ``trace`` (an address)
    records the :class:`TraceEvent` values of that address for `explain`; entries ``lists``
    matches are left to :mod:`reconciler.lists`."""
    result = MappingResult(trace=[] if trace is not None else None)
    mapper = _UserMapper(spec, result, members, keep_primaries, lists)
    mapper.trace_address = trace
    map_user = mapper.map
    for entry in entries:
        result.entries_read += 1
        map_user(entry)
    return finish(result)


def finish(result: MappingResult) -> MappingResult:
    """Drop the addresses in conflict: no recipient is better than a guessed one."""
    for address in result.conflicts:
        result.recipients.pop(address, None)
    for address in result.loops:
        result.recipients.pop(address, None)
    return result


class _UserMapper:
    """The per-entry mapping with everything the spec implies looked up once: it runs for
    every entry of directories with hundreds of thousands of them."""

    def __init__(
        self,
        spec: DomainSpec,
        result: MappingResult,
        members: Mapping[str, str] | None,
        keep_primaries: bool,
        lists: Filter | None,
    ) -> None:
        users = spec.users
        self.spec, self.result = spec, result
        self.mail = users.mail_attribute.lower()
        self.alias_attributes = tuple(a.lower() for a in users.alias_attributes)
        self.name = users.name_attribute.lower() if users.name_attribute else None
        self.username = users.username_attribute.lower() if users.username_attribute else None
        self.local_part_only = users.local_part_only
        self.managed = spec.managed_domains
        self.excludes = spec.excludes if spec.exclude else None
        self.disabled = (
            disabled_matcher(users.disabled_filter)
            if users.disabled_filter is not None and users.disabled != "include"
            else None
        )
        self.exclude_disabled = users.disabled == "exclude"
        rules = compile_rules(spec.rules)
        self.mailbox_rules = tuple(r for r in rules if r.rule.type == "mailbox")
        self.alias_rules = tuple(r for r in rules if r.rule.type == "alias")
        self.members = members
        self.keep_primaries = keep_primaries
        self.lists = lists
        self.trace = result.trace
        self.id_attribute = users.id_attribute.lower() if users.id_attribute else None
        # With no exclusions and no trace, accepting an address is one domain lookup and
        # claiming it one setdefault: done inline, without the methods' bookkeeping.
        self.plain = self.excludes is None and self.trace is None
        self.plain_domains = plain_domains(self.managed)

    def map(self, entry: Entry) -> None:
        result, attributes = self.result, entry.attributes
        if self.lists is not None and self.lists.matches(attributes):
            result.entries_read -= 1  # read again, and counted, as a list
            return
        if self.members is not None and normalize_dn(entry.dn) not in self.members:
            self._drop_entry(entry, NOT_MEMBER)
            return
        disabled = self.disabled is not None and self.disabled.matches(attributes)
        if disabled and self.exclude_disabled:
            self._drop_entry(entry, DISABLED)
            return
        mail = attributes.get(self.mail, ())
        addresses: list[str] = []
        for attribute in self.alias_attributes:
            addresses += mail_values(attributes.get(attribute, ()))
        primary_raw = mail[0] if mail else None
        if primary_raw is None:
            # A proxyAddresses "SMTP:" value is the primary address when there is no mail.
            primary_raw = next(
                (v for a in self.alias_attributes for v in primary_values(entry.values(a))),
                None,
            )
        if self.mailbox_rules and primary_raw is None:
            primary_raw = next((a for r in self.mailbox_rules for a in r.addresses(entry)), None)
        if self.alias_rules:
            for rule in self.alias_rules:
                addresses += rule.addresses(entry)
        if primary_raw is None:
            result.dropped[NO_ADDRESS] += 1
            return
        primary = usual_address(primary_raw, self.plain_domains) or normalize(primary_raw)
        if primary is None:
            self._invalid(entry, primary_raw)
            return

        ids = attributes.get(self.id_attribute) if self.id_attribute is not None else None
        entry_id = ids[0] if ids and type(ids[0]) is str else identity(entry, self.id_attribute)
        if entry_id is None:
            result.entries_without_id += 1
            entry_id = entry.dn
        if self.excludes is not None and self.excludes(primary):
            # Excluding a person (an erasure request, say) excludes every address of theirs:
            # an alias left behind would still name them as its target.
            others = {normalize(a) for a in (*mail, *addresses)} - {None, primary}
            result.dropped[EXCLUDED] += len(others) + 1
            if self.trace is not None:
                for address in (primary, *others):
                    self._note(entry, address or "", EXCLUDED + f" (with {primary})")
            return
        if self.keep_primaries:
            result.primary_of[normalize_dn(entry.dn)] = primary
        plain, managed, dn = self.plain, self.managed, entry.dn
        if plain and primary[primary.index("@") + 1 :] not in managed:
            result.dropped[FOREIGN_DOMAIN] += 1
        elif plain or self._accept(entry, primary):
            names = attributes.get(self.name, ()) if self.name else ()
            name = (names[0] if type(names[0]) is str else text(names[0])) if names else None
            username = None
            if self.username is not None:
                login = attributes.get(self.username)
                if login:
                    username = login[0] if type(login[0]) is str else text(login[0])
                    if self.local_part_only and username is not None:
                        username = username.partition("@")[0]
            status = "disabled" if disabled else "active"
            mailbox = _new(
                Recipient, ("mailbox", name, entry_id, status, None, None, username, None)
            )
            if not plain:
                self._claim(entry, primary, mailbox)
            elif (owner := result.owners.setdefault(primary, dn)) == dn:
                result.recipients[primary] = mailbox
            else:  # as _claim does
                result.conflicts.setdefault(primary, {owner}).add(dn)

        if len(mail) > 1:
            addresses = [v for v in mail[1:] if type(v) is str] + addresses
        if not addresses:
            return
        # One object serves all of them.
        alias = _new(Recipient, ("alias", None, None, None, primary, None, None, None))
        seen = {primary}
        owners, recipients, usual = result.owners, result.recipients, self.plain_domains
        for raw in addresses:
            if raw == primary_raw:
                continue  # AD repeats the mail attribute as "SMTP:…": nothing to normalize
            # The usual alias is valid as written and claimed here; claimed again if the
            # entry repeats it, to no effect.
            if plain and (address := usual_address(raw, usual)) is not None and address != primary:
                if (owner := owners.setdefault(address, dn)) == dn:
                    recipients[address] = alias
                else:  # as _claim does
                    result.conflicts.setdefault(address, {owner}).add(dn)
                continue
            address = normalize(raw)
            if address is None:
                self._invalid(entry, raw)
            elif address not in seen:
                seen.add(address)
                if not plain:
                    if self._accept(entry, address):
                        self._claim(entry, address, alias)
                elif address[address.index("@") + 1 :] not in managed:
                    result.dropped[FOREIGN_DOMAIN] += 1
                elif (owner := owners.setdefault(address, dn)) == dn:
                    recipients[address] = alias
                else:  # as _claim does
                    result.conflicts.setdefault(address, {owner}).add(dn)

    def _accept(self, entry: Entry, address: str) -> bool:
        """Whether the address is in a managed domain and not excluded; counts it when not."""
        if address[address.index("@") + 1 :] not in self.managed:
            self.result.dropped[FOREIGN_DOMAIN] += 1
            self._note(entry, address, FOREIGN_DOMAIN)
            return False
        if self.excludes is not None and self.excludes(address):
            self.result.dropped[EXCLUDED] += 1
            self._note(entry, address, EXCLUDED)
            return False
        return True

    def _claim(self, entry: Entry, address: str, recipient: Recipient) -> None:
        result, dn = self.result, entry.dn
        owner = result.owners.get(address)
        if self.trace is not None:
            self._note(entry, address, _outcome(recipient))
        if owner is not None and owner != dn:
            result.conflicts.setdefault(address, {owner}).add(dn)
            return
        result.owners[address] = dn
        result.recipients[address] = recipient

    def _drop_entry(self, entry: Entry, reason: str) -> None:
        self.result.dropped[reason] += 1
        if self.trace is not None:
            for address in self._origins(entry):
                self._note(entry, address, reason)

    def _invalid(self, entry: Entry, raw: Value) -> None:
        self.result.dropped[INVALID] += 1
        value = raw if isinstance(raw, str) else repr(raw)
        invalid = InvalidValue(entry.dn, self._attribute_of(entry, raw), value, invalid_reason(raw))
        self.result.invalid.append(invalid)
        self._note(entry, value.strip().lower(), f"{INVALID}: {invalid.reason}")

    def _attribute_of(self, entry: Entry, raw: Value) -> str:
        """Where an (invalid) value came from; asked only for the rare invalid ones."""
        return next((origin for a, origin in self._sources(entry) if a == raw), "a rule")

    def _sources(self, entry: Entry) -> list[tuple[str, str]]:
        """(address as written, attribute or rule) for every address of the entry."""
        users = self.spec.users
        found = [(v, users.mail_attribute) for v in entry.values(self.mail) if isinstance(v, str)]
        for attribute in users.alias_attributes:
            found += [(v, attribute) for v in mail_values(entry.values(attribute))]
        for rule in (*self.mailbox_rules, *self.alias_rules):
            found += [(a, rule.describe()) for a in rule.addresses(entry)]
        return found

    def _origins(self, entry: Entry) -> dict[str, str]:
        origins: dict[str, str] = {}
        for raw, origin in self._sources(entry):
            origins.setdefault(normalize(raw) or raw.strip().lower(), origin)
        return origins

    trace_address: str | None = None

    def _note(self, entry: Entry, address: str, outcome: str) -> None:
        if self.trace is None or address != self.trace_address:
            return
        origin = self._origins(entry).get(address, "")
        self.trace.append(TraceEvent(address, entry.dn, origin, outcome))


def _outcome(recipient: Recipient) -> str:
    if recipient.kind == "alias":
        return f"alias of {recipient.target}"
    if recipient.status == "disabled":
        return "mailbox (disabled account)"
    return recipient.kind
