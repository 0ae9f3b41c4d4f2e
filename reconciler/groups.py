"""Groups (MailStore style): read with ``groups.filter``, members given as DNs or as names
resolved through ``groups.member_filter``; ``only_members_of`` admits the members of named
groups, nested groups included, each group visited once (groups may contain each other).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from reconciler.addresses import text
from reconciler.directory import DirectorySource, normalize_dn
from reconciler.errors import ConfigError
from reconciler.ldapfilter import (
    And,
    Equality,
    Filter,
    Not,
    Or,
    escape_filter_value,
    parse_filter,
)
from reconciler.spec import GroupsSpec

# Stands for {member} while the member filter is searched for all names at once.
_MARKER = "reconciler-member-placeholder"
_ANY = "*"


@dataclass(frozen=True)
class Group:
    dn: str
    key: str  # normalized DN
    name: str | None
    description: str | None
    members: tuple[str, ...]  # normalized DNs of the members (users, groups, lists)


def read_groups(source: DirectorySource, groups: GroupsSpec) -> dict[str, Group]:
    """Every group ``groups.filter`` selects, by normalized DN, with members resolved to DNs."""
    members_attribute = groups.members_attribute.lower()
    wanted = [groups.name_attribute, groups.members_attribute]
    wanted += [groups.description_attribute] if groups.description_attribute else []
    raw = [
        (
            entry,
            [v for v in entry.values(members_attribute) if isinstance(v, str)],
        )
        for entry in source.search(groups.filter, wanted)
    ]
    if groups.member_filter is not None:
        names = {m for _, members in raw for m in members}
        resolved = resolve_names(source, groups.member_filter, names)
        keys_of = {name: resolved.get(name, ()) for name in names}
    else:
        keys_of = {}
    found: dict[str, Group] = {}
    for entry, members in raw:
        if groups.member_filter is not None:
            keys = tuple(k for m in members for k in keys_of[m])
        else:
            keys = tuple(normalize_dn(m) for m in members)
        key = normalize_dn(entry.dn)
        found[key] = Group(
            entry.dn,
            key,
            text(entry.first(groups.name_attribute)),
            text(entry.first(groups.description_attribute))
            if groups.description_attribute
            else None,
            keys,
        )
    return found


def resolve_names(
    source: DirectorySource, member_filter: str, names: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """name -> normalized DNs of the entries ``member_filter`` finds for it ({member} replaced
    by the name, escaped per RFC 4515).

    One search for all names ({member} as ``*``), not one per name: each candidate is then
    checked locally with the name's own filter. When {member} is a whole equality value (the
    usual ``(uid={member})``), candidates are matched to names through that attribute."""
    wanted: dict[str, list[str]] = {}
    for name in names:
        wanted.setdefault(name.casefold(), []).append(name)
    if not wanted:
        return {}
    template = parse_filter(member_filter.replace("{member}", _MARKER))
    keyed = sorted(_equality_attributes(template))
    filters: dict[str, Filter] = {}

    def name_filter(name: str) -> Filter:
        if name not in filters:
            filters[name] = parse_filter(
                member_filter.replace("{member}", escape_filter_value(name))
            )
        return filters[name]

    found: dict[str, list[str]] = {}
    attributes = sorted(template.attributes())
    for entry in source.search(member_filter.replace("{member}", _ANY), attributes):
        if keyed:
            candidates = [
                name
                for attribute in keyed
                for value in entry.values(attribute)
                if isinstance(value, str)
                for name in wanted.get(value.strip().casefold(), ())
            ]
        else:
            candidates = [n for group in wanted.values() for n in group]
        for name in dict.fromkeys(candidates):
            if name_filter(name).matches(entry.attributes):
                found.setdefault(name, []).append(normalize_dn(entry.dn))
    return {name: tuple(keys) for name, keys in found.items()}


def _equality_attributes(node: Filter) -> Iterator[str]:
    if isinstance(node, And | Or):
        for child in node.filters:
            yield from _equality_attributes(child)
    elif isinstance(node, Not):
        yield from _equality_attributes(node.filter)
    elif isinstance(node, Equality) and node.value == _MARKER:
        yield node.attribute.split(";", 1)[0].lower()


def members_of(groups: Mapping[str, Group], names: Sequence[str]) -> dict[str, str]:
    """Normalized DN -> how it is a member ("Mail Users" or "Mail Users > Sales"), for every
    entry in the named groups or in groups nested in them. A group is expanded once, so
    groups that contain each other end the walk instead of looping."""
    by_name: dict[str, list[Group]] = {}
    for group in groups.values():
        if group.name is not None:
            by_name.setdefault(group.name.casefold(), []).append(group)
    missing = [n for n in names if n.casefold() not in by_name]
    if missing:
        raise ConfigError(
            f"groups.only_members_of names {', '.join(map(repr, missing))}, but groups.filter "
            "finds no group of that name",
            "check the names (groups.name_attribute) and groups.filter; nothing was applied",
        )
    admitted: dict[str, str] = {}
    queue = deque((g, g.name or g.dn) for n in names for g in by_name[n.casefold()])
    expanded: set[str] = set()
    while queue:
        group, path = queue.popleft()
        if group.key in expanded:
            continue
        expanded.add(group.key)
        for member in group.members:
            admitted.setdefault(member, path)
            nested = groups.get(member)
            if nested is not None and nested.key not in expanded:
                queue.append((nested, f"{path} > {nested.name or nested.dn}"))
    return admitted
