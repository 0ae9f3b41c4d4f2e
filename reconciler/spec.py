"""The domain spec as the rest of the program sees it: frozen, complete, already validated.

``inventory.py`` loads and checks the YAML; this module turns a merged, schema-valid mapping
into a :class:`DomainSpec`, filling in what the directory flavor implies.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from reconciler.ldapfilter import parse_filter
from reconciler.runspec import NotifySpec, ScheduleSpec, build_notify, build_schedule

# What each directory flavor means for the users keys a spec leaves out (DESIGN.md §3).
FLAVOR_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "active_directory": {
        "filter": "(&(objectCategory=person)(objectClass=user)(mail=*))",
        "mail_attribute": "mail",
        "alias_attributes": ["proxyAddresses"],
        "name_attribute": "displayName",
        "username_attribute": "sAMAccountName",
        "id_attribute": "objectGUID",
        # userAccountControl bit 2 (ACCOUNTDISABLE), with AD's bitwise-AND matching rule.
        "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
    },
    "openldap": {
        "filter": "(&(objectClass=inetOrgPerson)(mail=*))",
        "mail_attribute": "mail",
        "alias_attributes": ["mailAlternateAddress"],
        "name_attribute": "cn",
        "username_attribute": None,
        "id_attribute": "entryUUID",
        "disabled_filter": None,
    },
    "generic": {
        "filter": "(mail=*)",
        "mail_attribute": "mail",
        "alias_attributes": [],
        "name_attribute": "cn",
        "username_attribute": None,
        "id_attribute": None,
        "disabled_filter": None,
    },
}
# What each flavor means for the groups keys a spec leaves out, once it has `groups` at all.
GROUP_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "active_directory": {"filter": "(objectClass=group)", "members_attribute": "member"},
    "openldap": {"filter": "(objectClass=groupOfNames)", "members_attribute": "member"},
    "generic": {"filter": "(objectClass=groupOfNames)", "members_attribute": "member"},
}
DISABLED_MODES = ("deactivate", "exclude", "include")
DEFAULT_FLAVOR = "generic"

# How `reconciler auth` checks a password on each flavor, unless the spec's auth says otherwise.
AUTH_FLAVOR_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "active_directory": {"mode": "active_directory", "search_attribute": "userPrincipalName"},
    "openldap": {"mode": "ldap", "search_attribute": "uid"},
    "generic": {"mode": "ldap", "search_attribute": "uid"},
}
DEFAULT_MAX_FAILURES = 5
DEFAULT_FAILURE_WINDOW = "15m"
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


DEFAULT_TIMEOUT = 10.0
DEFAULT_PAGE_SIZE = 500


@dataclass(frozen=True)
class Limits:
    """``policy.limits``: how much one run may change before it needs an explicit override.

    Each is a number of addresses (or a percentage); None means no limit.
    """

    mailbox_adds: int | None = None
    mailbox_deletes: int | None = None
    alias_adds: int | None = None
    alias_deletes: int | None = None
    total: int | None = None
    max_deletes: int | None = 500
    delete_percent: float | None = 30
    update_percent: float | None = 30
    min_existing: int = 10
    list_member_removal_percent: float | None = 30


@dataclass(frozen=True)
class Policy:
    """``policy``: which kinds of change a sync may make, and how leavers are removed."""

    allow_updates: bool = True
    allow_deactivations: bool = True
    removal: str = "delete"  # delete | deactivate (mark status: disabled)
    limits: Limits = Limits()


@dataclass(frozen=True)
class DirectorySpec:
    """Where entries come from: live ``servers`` (tried in order) or an ``ldif`` export."""

    flavor: str
    ldif: Path | None
    base_dn: str | None
    servers: tuple[str, ...] = ()
    tls: str = "starttls"
    verify_certificate: bool = True
    ca_file: Path | None = None
    bind_dn: str | None = None
    password: Mapping[str, str] | None = None  # where the secret is ({env}/{file}), never it
    timeout: float = DEFAULT_TIMEOUT
    page_size: int = DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class UsersSpec:
    filter: str
    mail_attribute: str
    alias_attributes: tuple[str, ...]
    name_attribute: str | None
    id_attribute: str | None
    username_attribute: str | None = None
    local_part_only: bool = False
    disabled: str = "deactivate"  # deactivate | exclude | include
    disabled_filter: str | None = None  # RFC 4515: which entries are disabled accounts
    # Further attributes the mapping reads (those of the rules), requested with the others.
    extra_attributes: tuple[str, ...] = ()

    def attributes(self) -> tuple[str, ...]:
        """The attributes the mapping reads, so a directory source can request only those."""
        names = [self.mail_attribute, *self.alias_attributes]
        names += [a for a in (self.name_attribute, self.id_attribute, self.username_attribute) if a]
        if self.disabled_filter is not None and self.disabled != "include":
            names += sorted(parse_filter(self.disabled_filter).attributes())
        names += self.extra_attributes
        return tuple({n.lower(): n for n in reversed(names)}.values())[::-1]


@dataclass(frozen=True)
class Rule:
    """A SpamExperts-style mapping rule: a value of ``attribute`` matching ``regex`` gives the
    address ``format`` makes of its groups; ``origin`` says whether it is the domain's own rule
    or one of the defaults."""

    type: str  # mailbox | alias
    attribute: str
    regex: str
    format: str
    origin: str = "domain"  # domain | default


@dataclass(frozen=True)
class GroupsSpec:
    filter: str
    name_attribute: str
    description_attribute: str | None
    members_attribute: str
    # For members given as names: "(&(objectClass=posixAccount)(uid={member}))".
    member_filter: str | None
    only_members_of: tuple[str, ...]


@dataclass(frozen=True)
class ListsSpec:
    """Entries whose ``attribute`` has ``value`` are distribution lists, not mailboxes."""

    attribute: str
    value: str
    members_attribute: str = "member"  # for lists that are not among the groups read


@dataclass(frozen=True)
class AuthSpec:
    """How `reconciler auth` checks a user's directory password for this domain."""

    mode: str  # "ldap": search the entry, bind as its DN; "active_directory": bind as UPN
    search_attribute: str
    require_recipient: bool = True
    max_failures: int = DEFAULT_MAX_FAILURES
    failure_window: float = 900.0  # seconds
    failure_file: Path | None = None  # None: a file in the repository's .git directory
    upn_suffix: str | None = None  # AD: appended to a bare user name; None: the domain


@dataclass(frozen=True)
class DomainSpec:
    """One managed domain: where its directory is and how entries become recipients."""

    domain: str
    domain_aliases: tuple[str, ...]
    directory: DirectorySpec
    users: UsersSpec
    exclude: tuple[str, ...]
    source: Path
    digest: str
    protected: frozenset[str] = frozenset()
    policy: Policy = Policy()
    groups: GroupsSpec | None = None
    distribution_lists: ListsSpec | None = None
    rules: tuple[Rule, ...] = ()  # the effective rules: the domain's, then the defaults
    recipient_defaults: Mapping[str, Any] = field(default_factory=dict)
    auth: AuthSpec = AuthSpec("ldap", "uid")
    schedule: ScheduleSpec | None = None  # None: `reconciler run` syncs it only when named
    notify: NotifySpec = field(default_factory=NotifySpec)

    @cached_property
    def managed_domains(self) -> frozenset[str]:
        """Mail domains whose addresses this spec owns; addresses elsewhere are dropped."""
        return frozenset((self.domain, *self.domain_aliases))

    @cached_property
    def _exclude_pattern(self) -> re.Pattern[str] | None:
        # One regex for all globs: the mapping asks for every address of the directory.
        if not self.exclude:
            return None
        return re.compile("|".join(fnmatch.translate(p) for p in self.exclude))

    def excludes(self, address: str) -> bool:
        """Whether a (lower-case) address matches one of the ``exclude`` globs."""
        return self._exclude_pattern is not None and bool(self._exclude_pattern.match(address))


def build_spec(merged: Mapping[str, Any], source: Path, inventory_dir: Path) -> DomainSpec:
    """Build the spec from a merged mapping that already passed the schema and semantic checks."""
    directory = merged["directory"]
    flavor = directory.get("flavor", DEFAULT_FLAVOR)
    users = {**FLAVOR_DEFAULTS[flavor], **merged.get("users", {})}
    rules = effective_rules(merged)
    ldif = directory.get("ldif")
    return DomainSpec(
        domain=normalize_domain(merged["domain"]),
        domain_aliases=tuple(normalize_domain(d) for d in merged.get("domain_aliases", [])),
        directory=DirectorySpec(
            flavor=flavor,
            ldif=(inventory_dir / ldif) if ldif else None,
            base_dn=directory.get("base_dn"),
            servers=tuple(directory.get("servers", ())),
            tls=directory.get("tls", _implied_tls(directory.get("servers", ()))),
            verify_certificate=directory.get("verify_certificate", True),
            ca_file=(inventory_dir / directory["ca_file"]) if "ca_file" in directory else None,
            bind_dn=directory.get("bind_dn"),
            password=directory.get("password"),
            timeout=float(directory.get("timeout", DEFAULT_TIMEOUT)),
            page_size=directory.get("page_size", DEFAULT_PAGE_SIZE),
        ),
        users=UsersSpec(
            filter=users["filter"],
            mail_attribute=users["mail_attribute"],
            alias_attributes=tuple(users["alias_attributes"]),
            name_attribute=users["name_attribute"],
            id_attribute=users["id_attribute"],
            username_attribute=users["username_attribute"],
            local_part_only=users.get("local_part_only", False),
            disabled=users.get("disabled", "deactivate"),
            disabled_filter=users["disabled_filter"],
            extra_attributes=_extra_attributes(merged, rules),
        ),
        exclude=tuple(p.lower() for p in merged.get("exclude", [])),
        source=source,
        digest=spec_digest(merged),
        protected=frozenset(a.strip().lower() for a in merged.get("protected", [])),
        policy=build_policy(merged.get("policy", {})),
        groups=_groups(merged.get("groups"), flavor),
        distribution_lists=(
            ListsSpec(**merged["distribution_lists"]) if "distribution_lists" in merged else None
        ),
        rules=rules,
        recipient_defaults=dict(merged.get("recipient_defaults", {})),
        auth=_auth_spec(flavor, merged.get("auth", {})),
        schedule=build_schedule(merged.get("schedule")),
        notify=build_notify(merged.get("notify"), inventory_dir),
    )


def _extra_attributes(merged: Mapping[str, Any], rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """What the mapping reads besides the users keys: rule attributes, and the attribute that
    tells a distribution list (so that a list matching the users filter is not a mailbox)."""
    names = [r.attribute for r in rules]
    if "distribution_lists" in merged:
        names.append(merged["distribution_lists"]["attribute"])
    return tuple(dict.fromkeys(names))


def effective_rules(merged: Mapping[str, Any]) -> tuple[Rule, ...]:
    """The domain's own rules, then the default rules unless ``use_default_rules: false``."""
    own = [Rule(**r, origin="domain") for r in merged.get("rules", [])]
    defaults = (
        [Rule(**r, origin="default") for r in merged.get("default_rules", [])]
        if merged.get("use_default_rules", True)
        else []
    )
    return tuple(own + defaults)


def _groups(groups: Mapping[str, Any] | None, flavor: str) -> GroupsSpec | None:
    if groups is None:
        return None
    keys = {**GROUP_DEFAULTS[flavor], **groups}
    return GroupsSpec(
        filter=keys["filter"],
        name_attribute=keys.get("name_attribute", "cn"),
        description_attribute=keys.get("description_attribute"),
        members_attribute=keys["members_attribute"],
        member_filter=keys.get("member_filter"),
        only_members_of=tuple(keys.get("only_members_of", ())),
    )


def build_policy(policy: Mapping[str, Any]) -> Policy:
    """The ``policy`` keys over the documented defaults (keys left out keep theirs)."""
    defaults = Policy()
    limits = {**vars(defaults.limits), **policy.get("limits", {})}
    if limits["min_existing"] is None:
        limits["min_existing"] = 0
    return Policy(
        allow_updates=policy.get("allow_updates", defaults.allow_updates),
        allow_deactivations=policy.get("allow_deactivations", defaults.allow_deactivations),
        removal=policy.get("removal", defaults.removal),
        limits=Limits(**limits),
    )


def _auth_spec(flavor: str, auth: Mapping[str, Any]) -> AuthSpec:
    settings = {**AUTH_FLAVOR_DEFAULTS[flavor], **auth}
    failure_file = settings.get("failure_file")
    return AuthSpec(
        mode=settings["mode"],
        search_attribute=settings["search_attribute"],
        require_recipient=settings.get("require_recipient", True),
        max_failures=settings.get("max_failures", DEFAULT_MAX_FAILURES),
        failure_window=duration_seconds(settings.get("failure_window", DEFAULT_FAILURE_WINDOW)),
        failure_file=Path(failure_file) if failure_file else None,
        upn_suffix=settings.get("upn_suffix"),
    )


def duration_seconds(value: str | int) -> float:
    """``90s``, ``15m``, ``6h``, ``1d`` (or a number of seconds) as seconds."""
    if isinstance(value, int):
        return float(value)
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration like 90s, 15m, 6h or 1d")
    return float(int(match[1]) * _SECONDS[match[2]])


def _implied_tls(servers: list[str]) -> str:
    """Secure unless told otherwise: LDAPS when every URL is ldaps://, else StartTLS."""
    return (
        "ldaps"
        if servers and all(u.lower().startswith("ldaps://") for u in servers)
        else "starttls"
    )


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII form of a domain name (IDN labels in their xn-- form)."""
    return domain.strip().rstrip(".").encode("idna").decode("ascii").lower()


def spec_digest(merged: Mapping[str, Any]) -> str:
    """A digest of the effective spec, so a saved plan can tell when the spec changed."""
    canonical = json.dumps(merged, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
