"""Live LDAP and Active Directory servers as a directory source (ldap3 lives here only).

The one rule of this module: a read is used only when it is complete. Every page is read, the
final result code is 0 (ldap3 does not raise on sizeLimitExceeded or timeLimitExceeded, so it is
checked here), no referral is left unfollowed, and multi-valued attributes that AD returns in
ranges are fetched to their final ``-*`` chunk. Anything less is a DirectoryError that says
what was incomplete and where; nothing is applied from it.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import math
import os
import shlex
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ldap3
import ldap3.core.results
from ldap3.core import exceptions as ldap_errors
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc2696 import paged_search_control
from ldap3.protocol.rfc4511 import ProtocolOp
from ldap3.utils.asn1 import encode as asn1_encode

from reconciler.directory import Entry, Progress, ReadInterrupted, Value
from reconciler.errors import ConfigError, DirectoryError
from reconciler.ldapwire import (
    MessageReader,
    SearchDone,
    SearchEntry,
    SearchReference,
    frame_message,
)
from reconciler.secrets import Secret
from reconciler.spec import DirectorySpec, UsersSpec

log = logging.getLogger("reconciler.ldap")

RawAttributes = dict[str, list[bytes]]  # as ldap3 returns them
# An entry as a page yields it: attribute names lower-cased, values decoded (text, or bytes
# for binary attributes), range-retrieval chunks not yet followed.
PageEntry = tuple[str, dict[str, list[Value]]]
RECEIVE_SIZE = 256 * 1024

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
# A server that never clears the paging cookie would otherwise keep us reading forever.
MAX_PAGES = 100_000
# Bound on range-retrieval rounds per attribute (1500 values each on AD: 15M values).
MAX_RANGE_ROUNDS = 10_000
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


class LdapSource:
    """The entries the users filter selects, read from the first server that answers."""

    def __init__(
        self,
        directory: DirectorySpec,
        users: UsersSpec,
        password: Secret | None,
        progress: Progress | None = None,
    ) -> None:
        self._directory = directory
        self._progress = progress
        self._users = users
        self._password = password
        self._servers = server_addresses(directory)
        self._failures: dict[str, str] = {}  # url -> why it failed, in the order tried
        self.used: ServerAddress | None = None
        self.base_dn: str | None = directory.base_dn

    def describe(self) -> str:
        server = self.used.url if self.used else ", ".join(s.url for s in self._servers)
        return f"LDAP {server}"

    def connection_facts(self) -> dict[str, str]:
        """What `test-connection` reports about the last read (never the password)."""
        directory = self._directory
        if self.used is None:
            return {}
        tls = (
            "LDAPS"
            if self.used.ldaps
            else {"starttls": "StartTLS", "none": "none"}.get(directory.tls, directory.tls)
        )
        if tls != "none":
            tls += (
                ", certificate verified"
                if directory.verify_certificate
                else (", certificate NOT verified (verify_certificate: false)")
            )
        facts = {
            "server": self.used.url,
            "tls": tls,
            "bound as": directory.bind_dn or "anonymous",
            "base DN": self.base_dn or "",
        }
        skipped = [f"{url} ({why})" for url, why in self._failures.items()]
        if skipped:
            facts["failed over"] = "; ".join(skipped)
        return facts

    def entries(self) -> Iterator[Entry]:
        """Stream the entries from the first server that works. A server that fails part-way
        raises ReadInterrupted: the caller starts over, and this source on the next server."""
        return self.search(self._users.filter, self._users.attributes())

    def search(self, search_filter: str, attributes: Sequence[str]) -> Iterator[Entry]:
        """Like :meth:`entries`, for another filter and attributes (groups, lists, members)."""
        for server in self._servers:
            if server.url in self._failures:
                continue
            try:
                connection = self._connect(server)
            except ServerUnusable as exc:
                self._failures[server.url] = exc.message
                log.warning("%s: %s; trying the next server", server.url, exc.message)
                continue
            self.used = server
            try:
                yield from self._search(connection, server, search_filter, attributes)
                return
            except ServerUnusable as exc:
                self._failures[server.url] = exc.message
                if len(self._failures) < len(self._servers):
                    raise ReadInterrupted(f"{server.url}: {exc.message}") from None
                break
            finally:
                _close(connection)
        tried = "; ".join(f"{url}: {why}" for url, why in self._failures.items())
        raise DirectoryError(
            f"no directory server could be read completely ({tried})",
            "check the servers, the network and directory.timeout; nothing was applied",
        )

    # -- connecting ------------------------------------------------------------------------

    def _connect(self, server: ServerAddress) -> ldap3.Connection:
        directory = self._directory
        try:
            # Revealed in the call only: a local would show the password in a traceback.
            connection = bind(
                directory,
                server,
                directory.bind_dn,
                self._password.reveal() if self._password else None,
            )
        except BindRefused as exc:
            if exc.code == 49:
                raise DirectoryError(
                    f"{server.url}: bind as {directory.bind_dn!r} refused: {exc.detail}",
                    "check bind_dn and the password the spec points at",
                ) from None
            raise ServerUnusable(f"bind failed: {exc.detail}") from None
        log.debug(
            "%s: bound as %s (%s)",
            server.url,
            directory.bind_dn or "anonymous",
            "LDAPS" if server.ldaps else directory.tls,
        )
        return connection

    # -- reading ---------------------------------------------------------------------------

    def _search(
        self,
        connection: ldap3.Connection,
        server: ServerAddress,
        search_filter: str,
        requested: Sequence[str],
    ) -> Iterator[Entry]:
        base = self.base_dn or self._naming_context(connection, server)
        self.base_dn = base
        attributes = sorted(set(requested))
        log.debug(
            "equivalent: %s", self.ldapsearch_command(server, base, attributes, search_filter)
        )
        pager = (_Ldap3Pager if read_path() == "ldap3" else _WirePager)(
            self, connection, server, base, attributes, search_filter
        )
        pager.send(None)
        read = 0
        for page in range(1, MAX_PAGES + 1):
            entries, cookie = pager.receive()
            ranged = any(";range=" in name for _, raw in entries for name in raw)
            if cookie and not ranged:
                # Ask for the next page before mapping this one: the server works on it
                # meanwhile. (Range retrieval needs the connection to itself: not then.)
                pager.send(cookie)
            if ranged:
                for dn, raw in entries:
                    yield self._entry(connection, server, dn, raw)
            else:
                for dn, raw in entries:
                    yield Entry(dn, raw)
            if self._progress is not None:
                read += len(entries)
                self._progress(read, page)
            if not cookie:
                log.debug("%s: read %d page(s)", server.url, page)
                return
            if ranged:
                pager.send(cookie)
        raise DirectoryError(
            f"{server.url}: the server kept returning a paging cookie after "
            f"{MAX_PAGES} pages; the read is incomplete"
        )

    def _request(
        self,
        connection: ldap3.Connection,
        server: ServerAddress,
        base: str,
        scope: str,
        search_filter: str,
        attributes: Sequence[str],
        paged_cookie: bytes | None = None,
        paged: bool = True,
    ) -> list[dict[str, Any]]:
        """One search request; anything but result code 0 is an error naming what and where."""
        return search_request(
            connection,
            server,
            base,
            scope,
            search_filter,
            attributes,
            page_size=self._directory.page_size if paged else None,
            paged_cookie=paged_cookie,
        )

    def _naming_context(self, connection: ldap3.Connection, server: ServerAddress) -> str:
        return naming_context(connection, server)

    def _entry(
        self,
        connection: ldap3.Connection,
        server: ServerAddress,
        dn: str,
        attributes: dict[str, list[Value]],
    ) -> Entry:
        for name in [n for n in attributes if ";range=" in n]:
            plain, _, first = name.partition(";range=")
            values = attributes.pop(name)
            values += self._rest_of_range(connection, server, dn, plain, first)
            attributes[plain] = values
        return Entry(dn, attributes)

    def _rest_of_range(
        self,
        connection: ldap3.Connection,
        server: ServerAddress,
        dn: str,
        attribute: str,
        returned: str,
    ) -> list[Value]:
        """AD range retrieval: ask for ``attr;range=N-*`` until the server answers ``…-*``."""
        values: list[Value] = []
        for _ in range(MAX_RANGE_ROUNDS):
            low, _, high = returned.partition("-")
            if high == "*":
                return values
            if not (low.isdigit() and high.isdigit()):
                break
            wanted = f"{attribute};range={int(high) + 1}-*"
            response = self._request(
                connection, server, dn, ldap3.BASE, "(objectClass=*)", [wanted], paged=False
            )
            chunk = _decoded(response[0]["raw_attributes"]) if response else {}
            name = next((n for n in chunk if n.startswith(attribute.lower() + ";range=")), None)
            if name is None:
                break
            values += chunk[name]
            returned = name.partition(";range=")[2]
        raise DirectoryError(
            f"{server.url}: range retrieval of {attribute} for {dn!r} stopped "
            f"before its final chunk (last range {returned!r})"
        )

    def ldapsearch_command(
        self,
        server: ServerAddress,
        base: str,
        attributes: Sequence[str],
        search_filter: str | None = None,
    ) -> str:
        """The same search as an ``ldapsearch`` command line, for debugging (no password)."""
        directory = self._directory
        words = ["ldapsearch", "-LLL", "-x", "-H", server.url]
        if directory.tls == "starttls" and not server.ldaps:
            words.append("-ZZ")
        if directory.bind_dn:
            words += ["-D", directory.bind_dn, "-W"]
        words += [
            "-b",
            base,
            "-s",
            "sub",
            "-E",
            f"!pr={directory.page_size}/noprompt",
            search_filter or self._users.filter,
            *attributes,
        ]
        return shlex.join(words)


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
        failure = ServerUnusable(_exception_text(exc))
    except ServerUnusable as exc:
        failure = exc
    finally:
        # ldap3's Connection repr shows the password; it is not needed after the bind.
        connection.password = None
        connection.request = None  # ldap3 keeps the last request: the bind, with it
    if failure is not None:
        # Raised here, not in the except block: no exception context keeps ldap3's frames
        # (whose locals hold the password) alive for a traceback or a crash reporter.
        _close(connection)
        raise failure
    if not bound:
        result: dict[str, Any] = connection.result or {}
        detail = _result_text(connection)
        _close(connection)
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
    attributes = _decoded(root[0]["raw_attributes"]) if root else {}
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
        raise ServerUnusable(f"the search failed part-way: {_exception_text(exc)}") from None
    result: dict[str, Any] = connection.result or {}
    if result.get("result") != 0:
        raise _incomplete(server, base, result.get("result", -1), result.get("message") or "")
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
_BINARY = frozenset({"objectguid", "objectsid"})


class _Ldap3Pager:
    """Pages through ldap3's own decoder (the reference path): sending is deferred to receive."""

    def __init__(
        self,
        source: LdapSource,
        connection: ldap3.Connection,
        server: ServerAddress,
        base: str,
        attributes: Sequence[str],
        search_filter: str,
    ) -> None:
        self.source, self.connection, self.server = source, connection, server
        self.base, self.attributes, self.filter = base, attributes, search_filter
        self.cookie: bytes | None = None

    def send(self, cookie: bytes | None) -> None:
        self.cookie = cookie

    def receive(self) -> tuple[list[PageEntry], bytes | None]:
        response = self.source._request(
            self.connection,
            self.server,
            self.base,
            ldap3.SUBTREE,
            self.filter,
            self.attributes,
            self.cookie,
        )
        entries: list[PageEntry] = []
        for item in response:
            if item["type"] == "searchResRef":
                raise _referral(self.server, self.base, item.get("uri", []))
            if item["type"] == "searchResEntry":
                entries.append((item["dn"], _decoded(item["raw_attributes"])))
        controls = (self.connection.result or {}).get("controls") or {}
        return entries, controls.get(PAGED_RESULTS_OID, {}).get("value", {}).get("cookie")


class _WirePager(_Ldap3Pager):
    """Pages whose responses ldapwire decodes straight off ldap3's socket (ldap3's decoder
    costs about 10 times the whole read). ldap3 encodes the search request once and each
    page's paging control; ldapwire frames them into the message sent on ldap3's socket."""

    message_id = 0
    operation: bytes | None = None  # the searchRequest as ldap3 encodes it, made once

    def send(self, cookie: bytes | None) -> None:
        if self.operation is None:
            request = search_operation(
                self.base,
                self.filter,
                ldap3.SUBTREE,
                ldap3.DEREF_NEVER,
                list(self.attributes),
                0,
                0,
                False,
                False,
                self.connection.auto_encode,
                None,
                validator=None,
                check_names=False,
            )
            self.operation = asn1_encode(ProtocolOp().setComponentByName("searchRequest", request))
        control = asn1_encode(paged_search_control(True, self.source._directory.page_size, cookie))
        # ldap3's counter, so that its own requests on this connection (range retrieval)
        # never reuse an ID.
        self.message_id = self.connection.server.next_message_id()
        message = frame_message(self.message_id, self.operation, (control,))
        try:
            self.connection.socket.sendall(message)
        except OSError as exc:
            raise ServerUnusable(f"the search failed part-way: error sending data: {exc}") from None

    def receive(self) -> tuple[list[PageEntry], bytes | None]:
        server, base, message_id = self.server, self.base, self.message_id
        sock = self.connection.socket
        sock.settimeout(self.source._directory.timeout)
        reader = MessageReader(binary_types=_BINARY)
        entries: list[PageEntry] = []
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except OSError as exc:
                raise ServerUnusable(
                    f"the search failed part-way: error receiving data: {exc}"
                ) from None
            if not data:
                raise ServerUnusable("the search failed part-way: the server closed the connection")
            for received_id, op in reader.feed(data):
                if isinstance(op, SearchEntry) and received_id == message_id:
                    entries.append((op.dn, op.attributes))
                elif isinstance(op, SearchDone) and received_id == message_id:
                    if reader.buffered:
                        raise DirectoryError(f"{server.url}: data after the end of a search result")
                    if op.result_code != 0:
                        raise _incomplete(server, base, op.result_code, op.diagnostic)
                    return entries, op.paged_cookie
                elif isinstance(op, SearchReference) and received_id == message_id:
                    raise _referral(server, base, op.uris)
                elif received_id == 0:  # an unsolicited notification: the server is going away
                    raise ServerUnusable("the search failed part-way: the server disconnected")
                else:
                    raise DirectoryError(
                        f"{server.url}: unexpected response (message {received_id}) to the search"
                    )


def _referral(server: ServerAddress, base: str, uris: Sequence[str]) -> DirectoryError:
    return DirectoryError(
        f"{server.url}: the search of {base!r} returned a referral ({', '.join(uris)}); "
        "the read is incomplete",
        "set base_dn to a naming context the server holds, or point servers at a global catalog",
    )


def _incomplete(server: ServerAddress, base: str, code: int, message: str) -> DirectoryError:
    name = RESULT_NAMES.get(code) or ldap3.core.results.RESULT_CODES.get(code, "unknown")
    detail = f"result {code} {name}" + (f": {message.strip()}" if message.strip() else "")
    return DirectoryError(
        f"{server.url}: search of {base!r} ended with {detail}; "
        "the read is incomplete and was not used",
        _RESULT_HINTS.get(code, "check the spec's base_dn and the server's limits"),
    )


def read_path() -> str:
    """Which decoder reads search responses: ``fast`` (ldapwire, the default) or ``ldap3``.

    RECONCILER_LDAP_DECODER=ldap3 forces ldap3's own, slower decoder, to compare or to work
    around a server the fast path does not understand."""
    value = os.environ.get("RECONCILER_LDAP_DECODER", "fast").strip().lower()
    if value not in ("fast", "ldap3"):
        raise ConfigError(f"RECONCILER_LDAP_DECODER must be fast or ldap3, not {value!r}")
    return value


def _decoded(raw: RawAttributes) -> dict[str, list[Value]]:
    """Attribute values as text when UTF-8, else bytes (objectGUID and the like)."""
    attributes: dict[str, list[Value]] = {}
    for name, values in raw.items():
        key = name.lower()
        decoded: list[Value]
        if key.partition(";")[0] in _BINARY:
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
        started, why = False, _exception_text(exc).removeprefix("startTLS failed - ")
    else:
        why = _result_text(connection)
    if not started:
        raise ServerUnusable(
            f"StartTLS failed ({why}); not falling back to an unencrypted connection"
        )


def _exception_text(exc: Exception) -> str:
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


def _close(connection: ldap3.Connection) -> None:
    with contextlib.suppress(ldap_errors.LDAPException, OSError):
        connection.unbind()
    # ldap3 leaves the socket of a failed open (refused, TLS handshake) open: unbind() skips a
    # connection it never marked open.
    if connection.socket is not None:
        with contextlib.suppress(OSError):
            connection.socket.close()
