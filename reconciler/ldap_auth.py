"""Checking a user's password against the live directory: the ldap3 side of `reconciler auth`.

Connections, failover order, TLS and certificate checks are ldap_source's (``bind``), so a
login goes over exactly the transport a sync uses. Two modes:

``ldap``              bind as the spec's bind_dn (or anonymously), search for exactly one entry
                      whose ``search_attribute`` is the user name (escaped per RFC 4515), then
                      bind as that entry's DN on a separate connection with the password.
``active_directory``  bind with the password as the UPN (``user@upn_suffix``, or the name as
                      given when it has an ``@``) or as ``DOMAIN\\user``, then read the entry on
                      that connection: by ``search_attribute`` for a UPN, by sAMAccountName for
                      ``DOMAIN\\user``. Active Directory resolves these names itself.

Either way the entry must also match ``users.filter``. The user's password is sent as its
UTF-8 bytes: ldap3's SASLprep of text passwords would reject or rewrite some characters the
directory accepts as typed.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ldap3
import ldap3.core.results
from ldap3.core import exceptions as ldap_errors

from reconciler.directory import Entry
from reconciler.errors import DirectoryError, LoginFailed
from reconciler.ldap_connection import (
    RESULT_NAMES,
    BindRefused,
    ServerAddress,
    ServerUnusable,
    bind,
    close,
    decoded_attributes,
    exception_text,
    incomplete_error,
    naming_context,
    server_addresses,
)
from reconciler.ldapfilter import escape_filter_value, parse_filter
from reconciler.secrets import Secret
from reconciler.spec import DomainSpec

log = logging.getLogger("reconciler.auth")

INVALID_CREDENTIALS = 49
INVALID_DN_SYNTAX = 34
SIZE_LIMIT_EXCEEDED = 4
# The server may be fine a moment later, or another server may answer: try the next one.
_TRANSIENT = frozenset({51, 52})  # busy, unavailable

# Reason classes of a refused login, as logged (never with the password).
UNKNOWN_USER = "unknown user"
AMBIGUOUS_USER = "user name matches several entries"
WRONG_PASSWORD = "wrong password"
NOT_A_USER = "no entry matching users.filter"


@dataclass(frozen=True)
class Verified:
    """A password the directory accepted, and the entry of the account it belongs to."""

    entry: Entry
    server: str


def verify_password(
    spec: DomainSpec, username: str, password: Secret, service_password: Secret | None
) -> Verified:
    """Ask the spec's servers, in order, whether ``password`` is ``username``'s.

    Raises LoginFailed (with its reason class) when the directory says no, DirectoryError when
    no server could answer or the spec's own bind is refused.
    """
    failures: dict[str, str] = {}
    for server in server_addresses(spec.directory):
        try:
            if spec.auth.mode == "active_directory":
                return _verify_ad(spec, server, username, password)
            return _verify_ldap(spec, server, username, password, service_password)
        except ServerUnusable as exc:
            failures[server.url] = exc.message
            log.warning("%s: %s; trying the next server", server.url, exc.message)
    tried = "; ".join(f"{url}: {why}" for url, why in failures.items())
    raise DirectoryError(
        f"no directory server could check the password ({tried})",
        "check the servers, the network and directory.timeout; "
        "the attempt was not counted as a failed login",
    )


def ad_identity(spec: DomainSpec, username: str) -> tuple[str, str, str]:
    """(bind name, attribute, value) for an Active Directory login: the name AD resolves the
    account by, and how to find the same account's entry afterwards."""
    if "\\" in username:
        netbios, _, account = username.partition("\\")
        if not netbios or not account or "\\" in account:
            log.info("login refused before asking the directory: malformed DOMAIN\\user")
            raise LoginFailed(
                "malformed user name",
                "login refused: a user name with a backslash must be DOMAIN\\user",
            )
        return username, "sAMAccountName", account
    upn = username if "@" in username else f"{username}@{spec.auth.upn_suffix or spec.domain}"
    return upn, spec.auth.search_attribute, upn


def _verify_ad(
    spec: DomainSpec, server: ServerAddress, username: str, password: Secret
) -> Verified:
    bind_name, attribute, value = ad_identity(spec, username)
    connection = _user_bind(spec, server, bind_name, password)
    try:
        entries = _find(spec, connection, server, attribute, value)
    finally:
        close(connection)
    if not entries:
        raise LoginFailed(NOT_A_USER)
    if len(entries) > 1:
        raise LoginFailed(AMBIGUOUS_USER)
    return Verified(entries[0], server.url)


def _verify_ldap(
    spec: DomainSpec,
    server: ServerAddress,
    username: str,
    password: Secret,
    service_password: Secret | None,
) -> Verified:
    directory = spec.directory
    try:
        connection = bind(
            directory,
            server,
            directory.bind_dn,
            service_password.reveal() if service_password else None,
        )
    except BindRefused as exc:
        if exc.code == INVALID_CREDENTIALS:
            raise DirectoryError(
                f"{server.url}: bind as {directory.bind_dn!r} refused: {exc.detail}",
                "check bind_dn and the password the spec points at",
            ) from None
        raise ServerUnusable(f"bind failed: {exc.detail}") from None
    try:
        entries = _find(spec, connection, server, spec.auth.search_attribute, username)
    finally:
        close(connection)
    if len(entries) != 1:
        _decoy_bind(spec, server, password)
        raise LoginFailed(UNKNOWN_USER if not entries else AMBIGUOUS_USER)
    # The password goes to a connection of its own: the search connection stays the service's.
    close(_user_bind(spec, server, entries[0].dn, password))
    return Verified(entries[0], server.url)


def _decoy_bind(spec: DomainSpec, server: ServerAddress, password: Secret) -> None:
    """A bind as an entry that does not exist, so that an unknown user name takes as long to
    refuse as a wrong password (a second connection, TLS and a bind): timing must not tell
    them apart either. Its outcome does not matter."""
    base = spec.directory.base_dn
    decoy = f"cn=reconciler-no-such-user-{uuid.uuid4().hex}" + (f",{base}" if base else "")
    with contextlib.suppress(LoginFailed, DirectoryError):
        close(_user_bind(spec, server, decoy, password))


def _user_bind(
    spec: DomainSpec, server: ServerAddress, name: str, password: Secret
) -> ldap3.Connection:
    """A connection bound as the user, or LoginFailed / ServerUnusable / DirectoryError."""
    try:
        return bind(spec.directory, server, name, password.reveal().encode("utf-8"))
    except BindRefused as exc:
        refused = exc
    # Raised outside the except block: no exception context to carry ldap3's frames along.
    if refused.code == INVALID_CREDENTIALS:
        raise LoginFailed(WRONG_PASSWORD)
    if refused.code in _TRANSIENT:
        raise ServerUnusable(f"bind failed: {refused.detail}")
    if refused.code == INVALID_DN_SYNTAX and spec.auth.mode == "active_directory":
        raise DirectoryError(
            f"{server.url}: the server does not accept {_form(name)} as a bind name "
            f"({refused.detail}); Active Directory does",
            "is it Active Directory? For other servers set auth.mode: ldap",
        )
    # Locked, expired, must change the password (ppolicy, AD's data codes): not a login.
    name_of = RESULT_NAMES.get(refused.code) or ldap3.core.results.RESULT_CODES.get(
        refused.code, "unknown"
    )
    raise LoginFailed(f"bind refused (result {refused.code} {name_of})")


def _form(name: str) -> str:
    return "DOMAIN\\user" if "\\" in name else "a UPN"


def _find(
    spec: DomainSpec,
    connection: ldap3.Connection,
    server: ServerAddress,
    attribute: str,
    value: str,
) -> list[Entry]:
    """The entries (at most 2: enough to tell one from several) matching the users filter
    whose ``attribute`` equals ``value``."""
    base = spec.directory.base_dn or naming_context(connection, server)
    search_filter = f"(&{spec.users.filter}({attribute}={escape_filter_value(value)}))"
    try:
        connection.search(
            base,
            search_filter,
            search_scope=ldap3.SUBTREE,
            attributes=list(_attributes(spec, attribute)),
            dereference_aliases=ldap3.DEREF_NEVER,
            size_limit=2,
        )
    except ldap_errors.LDAPException as exc:
        raise ServerUnusable(f"the search failed: {exception_text(exc)}") from None
    result: dict[str, Any] = connection.result or {}
    code = result.get("result", -1)
    response: list[dict[str, Any]] = list(connection.response or [])
    entries = [
        Entry(item["dn"], decoded_attributes(item["raw_attributes"]))
        for item in response
        if item["type"] == "searchResEntry"
    ]
    if code == 0 or (code == SIZE_LIMIT_EXCEEDED and len(entries) > 1):
        return entries
    if code in _TRANSIENT:
        raise ServerUnusable(f"the search failed: result {code} {RESULT_NAMES[code]}")
    # A size limit below 2, a time limit, noSuchObject for the base: we cannot tell.
    raise incomplete_error(server, base, code, result.get("message") or "")


def _attributes(spec: DomainSpec, lookup: str) -> Sequence[str]:
    """What the checks after the bind read: the mapping's attributes (for the address), the
    disabled filter's and the lookup attribute."""
    users = spec.users
    names = [*users.attributes(), lookup]
    if users.disabled_filter:
        names += sorted(parse_filter(users.disabled_filter).attributes())
    return sorted(set(names), key=str.lower)
