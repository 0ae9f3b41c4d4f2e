"""Distribution lists (MailRoute style): entries whose ``distribution_lists.attribute`` has its
``value`` are ``list`` recipients, not mailboxes. Their members are the member entries' mailbox
addresses; a nested list contributes its own address. Lists that contain each other (a loop)
are conflicts: mail to them would circle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from reconciler.addresses import identity, mail_values, normalize, primary_values, text
from reconciler.directory import DirectorySource, Entry, normalize_dn
from reconciler.groups import Group, resolve_names
from reconciler.ldapfilter import Filter, escape_filter_value, parse_filter
from reconciler.mapping import (
    EXCLUDED,
    FOREIGN_DOMAIN,
    INVALID,
    NO_ADDRESS,
    MappingResult,
    TraceEvent,
)
from reconciler.recipient import Recipient
from reconciler.spec import DomainSpec, ListsSpec

NO_MEMBER_ADDRESS = "list member without address"


@dataclass(frozen=True)
class ListEntry:
    entry: Entry
    key: str  # normalized DN
    members: tuple[str, ...]  # normalized DNs


def _search_filter(lists: ListsSpec) -> str:
    return f"({lists.attribute}={escape_filter_value(lists.value)})"


def list_filter(spec: DomainSpec) -> Filter | None:
    """The filter that tells a list entry, to leave such entries out of the users."""
    lists = spec.distribution_lists
    return parse_filter(_search_filter(lists)) if lists is not None else None


def read_lists(
    source: DirectorySource, spec: DomainSpec, groups: Mapping[str, Group] | None
) -> list[ListEntry]:
    """Every list entry with its members as normalized DNs: a list that is also a group has
    that group's members; otherwise ``distribution_lists.members_attribute`` is read, a value
    that is a DN taken as it is and a plain name resolved through ``groups.member_filter``."""
    lists = spec.distribution_lists
    assert lists is not None
    attribute = lists.members_attribute.lower()
    wanted = [
        *spec.users.attributes(),
        attribute,
        spec.groups.name_attribute if spec.groups else "cn",
    ]
    raw = list(source.search(_search_filter(lists), wanted))
    member_filter = spec.groups.member_filter if spec.groups else None
    values = {e.dn: [v for v in e.values(attribute) if isinstance(v, str)] for e in raw}
    names = {v for vs in values.values() for v in vs if "=" not in v}
    resolved = resolve_names(source, member_filter, names) if member_filter and names else {}
    found = []
    for entry in raw:
        key = normalize_dn(entry.dn)
        if groups is not None and key in groups:
            members = groups[key].members
        else:
            members = tuple(
                k
                for v in values[entry.dn]
                for k in ((normalize_dn(v),) if "=" in v else resolved.get(v, ()))
            )
        found.append(ListEntry(entry, key, members))
    return found


def map_lists(lists: Sequence[ListEntry], spec: DomainSpec, result: MappingResult) -> None:
    """Add the list recipients (and their aliases) to ``result``; record loops."""
    users = spec.users
    mail, alias_attributes = users.mail_attribute, users.alias_attributes
    address_of: dict[str, str] = {}
    accepted: list[tuple[ListEntry, str]] = []
    for item in lists:
        entry = item.entry
        raw = entry.first(mail) or next(
            (v for a in alias_attributes for v in primary_values(entry.values(a))), None
        )
        primary = normalize(raw) if raw is not None else None
        if primary is None:
            result.dropped[INVALID if raw is not None else NO_ADDRESS] += 1
            continue
        address_of[item.key] = primary
        if _accepted(primary, spec, result, entry):
            accepted.append((item, primary))
    for item, primary in accepted:
        entry = item.entry
        members = []
        for key in item.members:
            address = address_of.get(key) or result.primary_of.get(key)
            if address is None:
                result.dropped[NO_MEMBER_ADDRESS] += 1
            else:
                members.append(address)
        names = [users.name_attribute, spec.groups.name_attribute if spec.groups else "cn"]
        recipient = Recipient(
            "list",
            name=next((text(v) for n in names if n and (v := entry.first(n)) is not None), None),
            id=identity(entry, users.id_attribute) or entry.dn,
            members=tuple(sorted(set(members))),
        )
        _claim(result, entry, primary, recipient)
        alias = Recipient("alias", target=primary)
        others = [v for v in entry.values(mail)[1:] if isinstance(v, str)]
        for attribute in alias_attributes:
            others += mail_values(entry.values(attribute))
        for value in others:
            address = normalize(value)
            if (
                address is not None
                and address != primary
                and _accepted(address, spec, result, entry)
            ):
                _claim(result, entry, address, alias)
    looped: set[str] = set()
    for loop in _loops({i.key: i for i in lists}, address_of):
        first = loop[0]
        result.loops[address_of.get(first.key, first.entry.dn)] = tuple(i.entry.dn for i in loop)
        looped.update(address_of[i.key] for i in loop if i.key in address_of)
    if looped:
        # No list of a loop (nor an alias of one) is synced: the plan is refused until fixed.
        for address, recipient in list(result.recipients.items()):
            if address in looped or recipient.target in looped:
                del result.recipients[address]


def _accepted(address: str, spec: DomainSpec, result: MappingResult, entry: Entry) -> bool:
    if address.partition("@")[2] not in spec.managed_domains:
        reason = FOREIGN_DOMAIN
    elif spec.excludes(address):
        reason = EXCLUDED
    else:
        return True
    result.dropped[reason] += 1
    if result.trace is not None:
        result.trace.append(TraceEvent(address, entry.dn, "list", reason))
    return False


def _claim(result: MappingResult, entry: Entry, address: str, recipient: Recipient) -> None:
    if result.trace is not None:
        outcome = "list" if recipient.kind == "list" else f"alias of list {recipient.target}"
        result.trace.append(TraceEvent(address, entry.dn, "distribution list", outcome))
    owner = result.owners.get(address)
    if owner is not None and owner != entry.dn:
        result.conflicts.setdefault(address, {owner}).add(entry.dn)
        return
    result.owners[address] = entry.dn
    result.recipients[address] = recipient


def _loops(
    lists: Mapping[str, ListEntry], address_of: Mapping[str, str]
) -> Iterator[list[ListEntry]]:
    """Each cycle of lists containing lists, once, starting at its smallest address."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    seen: set[tuple[str, ...]] = set()

    def visit(key: str, path: list[str]) -> Iterator[list[ListEntry]]:
        state[key] = 1
        path.append(key)
        for member in lists[key].members:
            if member not in lists:
                continue
            if state.get(member) == 1:
                cycle = path[path.index(member) :]
                start = min(range(len(cycle)), key=lambda i: address_of.get(cycle[i], cycle[i]))
                ordered = tuple(cycle[start:] + cycle[:start])
                if ordered not in seen:
                    seen.add(ordered)
                    yield [lists[k] for k in ordered]
            elif state.get(member) is None:
                yield from visit(member, path)
        path.pop()
        state[key] = 2

    for key in sorted(lists):
        if key not in state:
            yield from visit(key, [])
