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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

# What each directory flavor means for the users keys a spec leaves out (DESIGN.md §3).
FLAVOR_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "active_directory": {
        "filter": "(&(objectCategory=person)(objectClass=user)(mail=*))",
        "mail_attribute": "mail",
        "alias_attributes": ["proxyAddresses"],
        "name_attribute": "displayName",
        "id_attribute": "objectGUID",
        "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
    },
    "openldap": {
        "filter": "(&(objectClass=inetOrgPerson)(mail=*))",
        "mail_attribute": "mail",
        "alias_attributes": ["mailAlternateAddress"],
        "name_attribute": "cn",
        "id_attribute": "entryUUID",
        "disabled_filter": None,
    },
    "generic": {
        "filter": "(mail=*)",
        "mail_attribute": "mail",
        "alias_attributes": [],
        "name_attribute": "cn",
        "id_attribute": None,
        "disabled_filter": None,
    },
}
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
    # RFC 4515 filter that an entry of a disabled account matches (AD: userAccountControl bit 2).
    disabled_filter: str | None = None

    def attributes(self) -> tuple[str, ...]:
        """The attributes the mapping reads, so a directory source can request only those."""
        names = [self.mail_attribute, *self.alias_attributes]
        names += [a for a in (self.name_attribute, self.id_attribute) if a]
        return tuple(dict.fromkeys(names))


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
    auth: AuthSpec = AuthSpec("ldap", "uid")

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
            disabled_filter=users["disabled_filter"],
        ),
        exclude=tuple(p.lower() for p in merged.get("exclude", [])),
        source=source,
        digest=spec_digest(merged),
        auth=_auth_spec(flavor, merged.get("auth", {})),
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
