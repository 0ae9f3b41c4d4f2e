"""Connections to LDAP and Active Directory servers through ldap3: the server URLs, TLS (LDAPS,
or StartTLS that never falls back to plain, certificates and host names checked by OpenSSL),
binds, one search request, and what a result code that is not success means.

Shared by the directory source (:mod:`reconciler.ldap_source`) and the login check
(:mod:`reconciler.ldap_auth`). Passwords are handed to ldap3 for the bind only and cleared from
the connection afterwards.
"""

from __future__ import annotations

import ast
import contextlib
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ldap3
import ldap3.core.results
from ldap3.core import exceptions as ldap_errors

from reconciler.directory import Value
from reconciler.errors import DirectoryError
from reconciler.spec import DirectorySpec

RawAttributes = dict[str, list[bytes]]  # as ldap3 returns them

RESULT_NAMES = {
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    10: "referral",
    11: "adminLimitExceeded",
    32: "noSuchObject",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
}


class ServerUnusable(DirectoryError):
    """This server failed (unreachable, TLS, timed out); the next one may work."""


class BindRefused(DirectoryError):
    """The server answered the bind with an error: ``code`` is the LDAP result code."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"bind refused: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ServerAddress:
    url: str
    host: str
    port: int
    ldaps: bool


def server_addresses(directory: DirectorySpec) -> list[ServerAddress]:
    """The spec's servers, in the order they are tried."""
    return [parse_server_url(u, directory.tls) for u in directory.servers]


def parse_server_url(url: str, tls: str) -> ServerAddress:
    """``ldap://host[:port]`` or ``ldaps://host[:port]``; an ldaps:// URL implies LDAPS."""
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise DirectoryError(f"{url!r} is not an ldap:// or ldaps:// URL")
    ldaps = parts.scheme == "ldaps" or tls == "ldaps"
    return ServerAddress(url, parts.hostname, parts.port or (636 if ldaps else 389), ldaps)


def bind(
    directory: DirectorySpec,
    server: ServerAddress,
    user: str | None,
    password: str | bytes | None,
) -> ldap3.Connection:
    """A connection to ``server`` over the spec's transport (LDAPS, or StartTLS that never
    falls back to plain), certificate checked as the spec says, bound as ``user``
    (anonymous when None). ServerUnusable when the server or the transport failed (the next
    server may work); BindRefused when the server answered the bind with an error."""
    tls = _HandshakeCheckedTls(
        validate=ssl.CERT_REQUIRED if directory.verify_certificate else ssl.CERT_NONE,
        ca_certs_file=str(directory.ca_file) if directory.ca_file else None,
        version=ssl.PROTOCOL_TLS_CLIENT,
    )
    ldap_server = ldap3.Server(
        server.host,
        port=server.port,
        use_ssl=server.ldaps,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=directory.timeout,
    )
    connection = ldap3.Connection(
        ldap_server,
        user=user,
        password=password,
        auto_bind=ldap3.AUTO_BIND_NONE,
        client_strategy=ldap3.SYNC,
        read_only=True,
        raise_exceptions=False,
        check_names=False,
        auto_referrals=False,  # a referral is reported as incomplete, never chased
        auto_range=False,  # ldap3 stops silently when a range sub-search fails: we verify
        return_empty_attributes=False,
        # ldap3 packs this into SO_RCVTIMEO as whole seconds: a float raises struct.error.
        receive_timeout=max(1, math.ceil(directory.timeout)),
    )
    del password  # the connection holds it until the bind, and no longer (below)
    failure: ServerUnusable | None = None
    try:
        connection.open()
        if directory.tls == "starttls" and not server.ldaps:
            _start_tls(connection)
        bound = connection.bind()
    except ldap_errors.LDAPException as exc:
        failure = ServerUnusable(exception_text(exc))
    except ServerUnusable as exc:
        failure = exc
    finally:
        # ldap3's Connection repr shows the password; it is not needed after the bind.
        connection.password = None
        connection.request = None  # ldap3 keeps the last request: the bind, with it
    if failure is not None:
        # Raised here, not in the except block: no exception context keeps ldap3's frames
        # (whose locals hold the password) alive for a traceback or a crash reporter.
        close(connection)
        raise failure
    if not bound:
        result: dict[str, Any] = connection.result or {}
        detail = _result_text(connection)
        close(connection)
        raise BindRefused(result.get("result", -1), detail)
    return connection


class _HandshakeCheckedTls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS settings, with the server's name checked by OpenSSL during the handshake.

    ldap3 turns the context's host name check off and compares names itself after the
    handshake; when they differ it raises with the whole certificate in the message and
    leaves the wrapped socket open. Here the context checks the name (IP addresses included)
    as part of the handshake, whose failure closes the socket and says "Hostname mismatch"."""

    def wrap_socket(self, connection: ldap3.Connection, do_handshake: bool = False) -> None:
        verify = self.validate != ssl.CERT_NONE
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = verify
        context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
        if verify:
            if self.ca_certs_file:
                context.load_verify_locations(self.ca_certs_file)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        connection.socket = context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def naming_context(connection: ldap3.Connection, server: ServerAddress) -> str:
    """The base DN the server advertises: AD's defaultNamingContext, else its only context."""
    root = base_search(
        connection, server, "", ["defaultNamingContext", "namingContexts"], "(objectClass=*)"
    )
    attributes = decoded_attributes(root[0]["raw_attributes"]) if root else {}
    default = attributes.get("defaultnamingcontext", [])
    contexts = attributes.get("namingcontexts", [])
    if default:
        return str(default[0])
    if len(contexts) == 1:
        return str(contexts[0])
    raise DirectoryError(
        f"{server.url}: cannot tell the base DN: the server advertises "
        f"{len(contexts)} naming contexts",
        "set directory.base_dn",
    )


def base_search(
    connection: ldap3.Connection,
    server: ServerAddress,
    dn: str,
    attributes: Sequence[str],
    search_filter: str,
) -> list[dict[str, Any]]:
    """Read one entry (a base-scope search); anything but result code 0 is an error."""
    return search_request(connection, server, dn, ldap3.BASE, search_filter, attributes)


def search_request(
    connection: ldap3.Connection,
    server: ServerAddress,
    base: str,
    scope: str,
    search_filter: str,
    attributes: Sequence[str],
    *,
    page_size: int | None = None,
    paged_cookie: bytes | None = None,
) -> list[dict[str, Any]]:
    """One search request through ldap3 (paged, with the control critical, when ``page_size``
    is given); anything but result code 0 is an error naming what and where."""
    try:
        connection.search(
            base,
            search_filter,
            search_scope=scope,
            attributes=list(attributes),
            dereference_aliases=ldap3.DEREF_NEVER,
            paged_size=page_size,
            paged_criticality=page_size is not None,
            paged_cookie=paged_cookie,
        )
    except ldap_errors.LDAPException as exc:
        raise ServerUnusable(f"the search failed part-way: {exception_text(exc)}") from None
    result: dict[str, Any] = connection.result or {}
    if result.get("result") != 0:
        raise incomplete_error(server, base, result.get("result", -1), result.get("message") or "")
    return list(connection.response or [])


_RESULT_HINTS = {
    3: "the server's time limit cut the search: raise it for the bind user or narrow the filter",
    4: "the server's size limit cut the search: raise it for the bind user, or check that the "
    "server honours paging (directory.page_size)",
    10: "set base_dn to a naming context this server holds",
    32: "check directory.base_dn: the server has no such entry",
    11: "the server refused the paged search: lower directory.page_size to its paging limit",
    50: "the bind user may not read this part of the directory",
}


# Octet-string attributes (AD's objectGUID and objectSid): bytes even when they happen to be
# valid UTF-8, as the LDIF source keeps them; text would give the entry another id.
BINARY_ATTRIBUTES = frozenset({"objectguid", "objectsid"})


def referral_error(server: ServerAddress, base: str, uris: Sequence[str]) -> DirectoryError:
    return DirectoryError(
        f"{server.url}: the search of {base!r} returned a referral ({', '.join(uris)}); "
        "the read is incomplete",
        "set base_dn to a naming context the server holds, or point servers at a global catalog",
    )


def incomplete_error(server: ServerAddress, base: str, code: int, message: str) -> DirectoryError:
    name = RESULT_NAMES.get(code) or ldap3.core.results.RESULT_CODES.get(code, "unknown")
    detail = f"result {code} {name}" + (f": {message.strip()}" if message.strip() else "")
    return DirectoryError(
        f"{server.url}: search of {base!r} ended with {detail}; "
        "the read is incomplete and was not used",
        _RESULT_HINTS.get(code, "check the spec's base_dn and the server's limits"),
    )


def decoded_attributes(raw: RawAttributes) -> dict[str, list[Value]]:
    """Attribute values as text when UTF-8, else bytes (objectGUID and the like)."""
    attributes: dict[str, list[Value]] = {}
    for name, values in raw.items():
        key = name.lower()
        decoded: list[Value]
        if key.partition(";")[0] in BINARY_ATTRIBUTES:
            decoded = list(values)
        else:
            try:  # all text, the usual case: one comprehension, no per-value try
                decoded = [value.decode("utf-8") for value in values]
            except UnicodeDecodeError:
                decoded = [_text_or_bytes(value) for value in values]
        if key in attributes:
            attributes[key].extend(decoded)
        else:
            attributes[key] = decoded
    return attributes


def _text_or_bytes(value: bytes) -> Value:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _result_text(connection: ldap3.Connection) -> str:
    result: dict[str, Any] = connection.result or {}
    code: int = result.get("result", -1)
    name = result.get("description") or RESULT_NAMES.get(code, "unknown")
    message = (result.get("message") or "").strip()
    return f"result {code} {name}" + (f": {message}" if message else "")


def _start_tls(connection: ldap3.Connection) -> None:
    """StartTLS or ServerUnusable; ldap3 raises (it seldom returns False) when it fails."""
    try:
        started = connection.start_tls()
    except ldap_errors.LDAPException as exc:
        started, why = False, exception_text(exc).removeprefix("startTLS failed - ")
    else:
        why = _result_text(connection)
    if not started:
        raise ServerUnusable(
            f"StartTLS failed ({why}); not falling back to an unencrypted connection"
        )


def exception_text(exc: Exception) -> str:
    # ldap3 messages name the server and socket error, never the connection's credentials.
    # Its socket errors also derive from OSError/SSLError, whose str() of a single argument is
    # that tuple's repr, re-wrapped on each re-raise: ("('socket ssl wrapping error: …',)",)
    text = str(exc).strip()
    while text.startswith("(") and text.endswith(",)"):
        try:
            inner = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            break
        if not (isinstance(inner, tuple) and len(inner) == 1):
            break
        text = str(inner[0]).strip()
    return text or type(exc).__name__


def close(connection: ldap3.Connection) -> None:
    with contextlib.suppress(ldap_errors.LDAPException, OSError):
        connection.unbind()
    # ldap3 leaves the socket of a failed open (refused, TLS handshake) open: unbind() skips a
    # connection it never marked open.
    if connection.socket is not None:
        with contextlib.suppress(OSError):
            connection.socket.close()
