"""An Active Directory-like front for the test slapd: binds by UPN or DOMAIN\\user (no mocks).

OpenLDAP refuses a simple bind whose name is not a DN (invalidDNSyntax); Active Directory
resolves ``user@upn-suffix`` and ``DOMAIN\\user`` to the account itself. This front does what AD
does at that one point and nothing else: it listens on 127.0.0.1, answers StartTLS itself with
the test server's certificate (so the client really negotiates TLS and verifies it), rewrites
the name of each bind request found in ``accounts`` to the account's DN — a name it does not know
becomes a DN that does not exist, so slapd answers invalidCredentials as AD would — and forwards
every request to slapd on loopback, relaying the responses. Passwords are checked by slapd.

``bind_names`` records each bind name as the client sent it, and whether TLS was on by then.
Requests are relayed in lockstep (one request, then its responses), which is how ldap3's SYNC
strategy talks.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from slapd import SlapdServer

STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
BIND_REQUEST, UNBIND_REQUEST, ABANDON_REQUEST, EXTENDED_REQUEST = 0x60, 0x42, 0x50, 0x77
NOT_FINAL = frozenset({0x64, 0x73, 0x79})  # search entry, search reference, intermediate
UNKNOWN_ACCOUNT = "cn=no such account,dc=example,dc=com"


class AdFront:
    def __init__(self, slapd: SlapdServer, accounts: dict[str, str]) -> None:
        """``accounts``: bind name (UPN or DOMAIN\\user, any case) -> DN in slapd."""
        self.upstream = ("127.0.0.1", slapd.port)
        self.accounts = {name.lower(): dn for name, dn in accounts.items()}
        self.bind_names: list[tuple[str, bool]] = []  # (name as sent, over TLS)
        tls = Path(slapd.directory) / "tls"
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tls / "server.pem", tls / "server.key")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def __enter__(self) -> AdFront:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        conn: socket.socket = client
        tls = False
        try:
            reader = _Reader(conn)
            while not self._stop.is_set():
                message = reader.message()
                if message is None:
                    return
                message_id, op, content, rest = _split(message)
                if op == EXTENDED_REQUEST and STARTTLS_OID in content and not tls:
                    conn.sendall(_starttls_ok(message_id))
                    conn = self._context.wrap_socket(conn, server_side=True)
                    reader, tls = _Reader(conn), True
                    continue
                if op == BIND_REQUEST:
                    message = self._rewrite_bind(message_id, content, rest, tls)
                upstream.sendall(message)
                if op in (UNBIND_REQUEST, ABANDON_REQUEST):
                    continue
                answers = _Reader(upstream)
                while True:
                    response = answers.message()
                    if response is None:
                        return
                    conn.sendall(response)
                    if _split(response)[1] not in NOT_FINAL:
                        break
        except OSError:
            return
        finally:
            conn.close()
            upstream.close()

    def _rewrite_bind(self, message_id: bytes, content: bytes, rest: bytes, tls: bool) -> bytes:
        version, at = _tlv_at(content, 0)
        name, at2 = _tlv_at(content, at)
        authentication = content[at2:]
        sent = name.decode("utf-8")
        self.bind_names.append((sent, tls))
        dn = sent
        if "@" in sent or "\\" in sent:
            dn = self.accounts.get(sent.lower(), UNKNOWN_ACCOUNT)
        body = _tlv(0x02, version) + _tlv(0x04, dn.encode("utf-8")) + authentication
        return _tlv(0x30, _tlv(0x02, message_id) + _tlv(BIND_REQUEST, body) + rest)


class _Reader:
    """Whole BER messages from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def message(self) -> bytes | None:
        while True:
            size = _frame(self.buffer)
            if size is not None:
                message, self.buffer = self.buffer[:size], self.buffer[size:]
                return message
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data


def _length(data: bytes, at: int) -> tuple[int, int] | None:
    if len(data) <= at:
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    if len(data) < at + 1 + count:
        return None
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), at + 1 + count


def _frame(data: bytes) -> int | None:
    header = _length(data, 1)
    if header is None or len(data) < header[1] + header[0]:
        return None
    return header[1] + header[0]


def _tlv_at(data: bytes, at: int) -> tuple[bytes, int]:
    """(contents, offset after) of the TLV at ``at``."""
    header = _length(data, at + 1)
    assert header is not None
    length, start = header
    return data[start : start + length], start + length


def _split(message: bytes) -> tuple[bytes, int, bytes, bytes]:
    """(messageID contents, protocolOp tag, protocolOp contents, controls) of an LDAPMessage."""
    body, _ = _tlv_at(message, 0)
    message_id, at = _tlv_at(body, 0)
    op = body[at]
    content, end = _tlv_at(body, at)
    return message_id, op, content, body[end:]


def _tlv(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _starttls_ok(message_id: bytes) -> bytes:
    result = _tlv(0x0A, b"\x00") + _tlv(0x04, b"") + _tlv(0x04, b"") + _tlv(0x8A, STARTTLS_OID)
    return _tlv(0x30, _tlv(0x02, message_id) + _tlv(0x78, result))
