"""Live LDAP and Active Directory servers as a directory source (connections, TLS and binds are
:mod:`reconciler.ldap_connection`'s).

The one rule of this module: a read is used only when it is complete. Every page is read, the
final result code is 0 (ldap3 does not raise on sizeLimitExceeded or timeLimitExceeded, so it is
checked here), no referral is left unfollowed, and multi-valued attributes that AD returns in
ranges are fetched to their final ``-*`` chunk. Anything less is a DirectoryError that says
what was incomplete and where; nothing is applied from it.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import ldap3
import ldap3.core.results
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc2696 import paged_search_control
from ldap3.protocol.rfc4511 import ProtocolOp
from ldap3.utils.asn1 import encode as asn1_encode

from reconciler.directory import Entry, Progress, ReadInterrupted, Value
from reconciler.errors import ConfigError, DirectoryError
from reconciler.ldap_connection import (
    BINARY_ATTRIBUTES,
    BindRefused,
    ServerAddress,
    ServerUnusable,
    bind,
    close,
    decoded_attributes,
    incomplete_error,
    naming_context,
    referral_error,
    search_request,
    server_addresses,
)
from reconciler.ldapwire import (
    SEARCH_ENTRY,
    Frame,
    MessageReader,
    SearchDone,
    SearchEntry,
    SearchReference,
    frame_message,
)
from reconciler.secrets import Secret
from reconciler.spec import DirectorySpec, UsersSpec

log = logging.getLogger("reconciler.ldap")

# An entry as a page yields it: attribute names lower-cased, values decoded (text, or bytes
# for binary attributes), range-retrieval chunks not yet followed.
PageEntry = tuple[str, dict[str, list[Value]]]
RECEIVE_SIZE = 256 * 1024
_RANGE = b";range="
_TAG = operator.attrgetter("tag")
_ENTRIES = frozenset((SEARCH_ENTRY,))

# (dn, attributes) → Entry, in C: a named tuple's own constructor is a Python function.
_as_entry: Callable[[PageEntry], Entry] = functools.partial(tuple.__new__, Entry)
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
# A server that never clears the paging cookie would otherwise keep us reading forever.
MAX_PAGES = 100_000
# Bound on range-retrieval rounds per attribute (1500 values each on AD: 15M values).
MAX_RANGE_ROUNDS = 10_000


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
                # (every server has failed now: the loop runs out, to the error below)
            finally:
                close(connection)
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
        for number in range(1, MAX_PAGES + 1):
            page = pager.receive()
            cookie = page.cookie
            # Range retrieval needs the connection to itself: a page with ranges is read
            # through before the next is asked for.
            ranged = page.maybe_ranged and page.ranged()
            if cookie and not ranged:
                # Ask for the next page before decoding and mapping this one: the server
                # works on it meanwhile.
                pager.send(cookie)
            entries = page.entries()
            if ranged:
                for dn, raw in entries:
                    yield self._entry(connection, server, dn, raw)
            else:
                yield from map(_as_entry, entries)
            if self._progress is not None:
                read += len(entries)
                self._progress(read, number)
            if not cookie:
                log.debug("%s: read %d page(s)", server.url, number)
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
            chunk = decoded_attributes(response[0]["raw_attributes"]) if response else {}
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


class _Page:
    """One page of a search: its paging cookie, and its entries, decoded when first asked
    for. ``maybe_ranged``: whether an attribute may come in ranges (AD range retrieval), as
    far as can be told without decoding; :meth:`ranged` tells for sure."""

    def __init__(
        self,
        cookie: bytes | None,
        decode: Callable[[], list[PageEntry]],
        maybe_ranged: bool = True,
    ) -> None:
        self.cookie, self.maybe_ranged = cookie, maybe_ranged
        self._decode = decode
        self._entries: list[PageEntry] | None = None

    def entries(self) -> list[PageEntry]:
        if self._entries is None:
            self._entries = self._decode()
        return self._entries

    def ranged(self) -> bool:
        # (over the page's attribute names, each once: a set union runs in C)
        names = set().union(*(raw for _, raw in self.entries()))
        return any(";range=" in name for name in names)


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

    def receive(self) -> _Page:
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
                raise referral_error(self.server, self.base, item.get("uri", []))
            if item["type"] == "searchResEntry":
                entries.append((item["dn"], decoded_attributes(item["raw_attributes"])))
        controls = (self.connection.result or {}).get("controls") or {}
        cookie = controls.get(PAGED_RESULTS_OID, {}).get("value", {}).get("cookie")
        return _Page(cookie, lambda: entries)


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
        sock = self.connection.socket
        if sock is None:  # ldap3's own send would refuse a closed connection the same way
            raise ServerUnusable("the search failed part-way: the connection is closed")
        try:
            sock.sendall(message)
        except OSError as exc:
            raise ServerUnusable(f"the search failed part-way: error sending data: {exc}") from None

    def receive(self) -> _Page:
        """Read the page through to its searchResDone, checked at once; its entries are kept
        as received and decoded when the page's entries are asked for (by then the next page
        has been asked for: the server sends it while this one is decoded)."""
        server, base, message_id = self.server, self.base, self.message_id
        sock = self.connection.socket
        sock.settimeout(self.source._directory.timeout)
        reader = MessageReader(binary_types=BINARY_ATTRIBUTES)
        entries: list[Frame] = []
        # Whether a ";range=" option may be in the page, as far as the bytes tell (a value
        # that merely reads so costs the page its head start).
        maybe_ranged, tail = False, b""
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except OSError as exc:
                raise ServerUnusable(
                    f"the search failed part-way: error receiving data: {exc}"
                ) from None
            if not data:
                raise ServerUnusable("the search failed part-way: the server closed the connection")
            if not maybe_ranged:
                maybe_ranged, tail = mentions_range(tail, data)
            frames = reader.frames(data)
            if set(map(_TAG, frames)) <= _ENTRIES:  # (in C: nearly every piece received)
                entries.extend(frames)
                continue
            for index, frame in enumerate(frames):
                if frame.tag == SEARCH_ENTRY:
                    entries.append(frame)
                    continue
                received_id, op = reader.decode(frame)
                if isinstance(op, SearchDone) and received_id == message_id:
                    if reader.buffered or index < len(frames) - 1:
                        raise DirectoryError(f"{server.url}: data after the end of a search result")
                    if op.result_code != 0:
                        raise incomplete_error(server, base, op.result_code, op.diagnostic)
                    return _Page(
                        op.paged_cookie,
                        lambda: self._decoded(reader, entries, message_id),
                        maybe_ranged,
                    )
                self._unexpected(received_id, op, message_id)

    def _decoded(
        self, reader: MessageReader, frames: list[Frame], message_id: int
    ) -> list[PageEntry]:
        """The entries of the page asked for as ``message_id`` (by now the next page may have
        been asked for, under the next ID)."""
        entries: list[PageEntry] = []
        append, decode = entries.append, reader.decode
        for frame in frames:
            received_id, op = decode(frame)
            if type(op) is not SearchEntry or received_id != message_id:
                self._unexpected(received_id, op, message_id)
            append(op)  # (dn, attributes), as a page entry is
        return entries

    def _unexpected(self, received_id: int, op: object, message_id: int) -> NoReturn:
        if isinstance(op, SearchReference) and received_id == message_id:
            raise referral_error(self.server, self.base, op.uris)
        if received_id == 0:  # an unsolicited notification: the server is going away
            raise ServerUnusable("the search failed part-way: the server disconnected")
        raise DirectoryError(
            f"{self.server.url}: unexpected response (message {received_id}) to the search"
        )


def mentions_range(tail: bytes, data: bytes) -> tuple[bool, bytes]:
    """Whether ``;range=`` is in ``data``, or across its join with ``tail``, the end of what
    came before it; and the tail to pass on with the next piece of the stream."""
    keep = len(_RANGE) - 1
    seen = _RANGE in data or _RANGE in tail + data[:keep]
    return seen, data[-keep:] if len(data) >= keep else (tail + data)[-keep:]


def read_path() -> str:
    """Which decoder reads search responses: ``fast`` (ldapwire, the default) or ``ldap3``.

    RECONCILER_LDAP_DECODER=ldap3 forces ldap3's own, slower decoder, to compare or to work
    around a server the fast path does not understand."""
    value = os.environ.get("RECONCILER_LDAP_DECODER", "fast").strip().lower()
    if value not in ("fast", "ldap3"):
        raise ConfigError(f"RECONCILER_LDAP_DECODER must be fast or ldap3, not {value!r}")
    return value
