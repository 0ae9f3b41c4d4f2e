"""A small threaded TCP proxy on 127.0.0.1 that breaks connections on purpose (no mocks).

Put it between the LDAP client and a real slapd to make a server that misbehaves the way real
networks do::

    with TcpProxy(("127.0.0.1", slapd.port), mode=STALL, after=5000) as proxy:
        ...  # use proxy.url as an ldap:// server

Modes:

``pass``       forward both ways unchanged.
``stall``      forward the first ``after`` bytes from the server, then nothing more while the
               socket stays open (a server that stops answering mid-search).
``reset``      forward the first ``after`` bytes from the server, then reset the client's
               connection (SO_LINGER 0: a TCP RST, not an orderly close).
``blackhole``  accept connections, read and discard what the client sends, never answer
               (``target`` is not used).
``corrupt``    forward, but once ``after`` bytes have come from the server, make the next
               ``mail`` attribute's SEQUENCE a SET: an entry that frames as a message of the
               right size and does not decode.
``trailing``   forward, but send each searchResDone twice, in one piece: a server that sends
               data after the end of a search result.
``striptls``   forward, but answer a StartTLS extended request itself with protocolError and do
               not pass it on (what a downgrade attacker does); the client's later requests are
               forwarded as usual.

Bounded: at most ``max_connections`` connections, every socket polls with a short timeout, and
the proxy stops itself ``lifetime`` seconds after it started (a test that forgets ``stop()``
cannot leave threads behind). ``client_ops`` records the LDAP protocolOp tag of every request
the clients sent (0x60 bind, 0x63 search, 0x77 extended …) in the ``striptls`` mode.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from types import TracebackType

PASS, STALL, RESET, BLACKHOLE, STRIPTLS = "pass", "stall", "reset", "blackhole", "striptls"
CORRUPT, TRAILING = "corrupt", "trailing"
MODES = (PASS, STALL, RESET, BLACKHOLE, STRIPTLS, CORRUPT, TRAILING)
SEARCH_DONE = 0x65
_MAIL_TYPE = b"\x04\x04mail"  # the attribute type OCTET STRING "mail"

BIND_REQUEST = 0x60
EXTENDED_REQUEST = 0x77
STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
_POLL = 0.05


class TcpProxy:
    def __init__(
        self,
        target: tuple[str, int] | None,
        mode: str = PASS,
        *,
        after: int = 0,
        lifetime: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if target is None and mode != BLACKHOLE:
            raise ValueError(f"mode {mode!r} needs a target")
        self.target, self.mode, self.after = target, mode, after
        self.lifetime, self.max_connections = lifetime, max_connections
        self.connections = 0  # accepted so far
        self.client_ops: list[int] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._deadline = 0.0

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._deadline = time.monotonic() + self.lifetime
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _accept_loop(self) -> None:
        while self._running() and self.connections < self.max_connections:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if self.mode != BLACKHOLE:
                assert self.target is not None
                upstream = socket.create_connection(self.target, timeout=5)
            self._pump(client, upstream)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    sock.close()

    def _pump(self, client: socket.socket, upstream: socket.socket | None) -> None:
        sent = 0  # bytes forwarded from the server to the client
        corrupted = False
        pending = b""  # client bytes not yet framed into whole LDAP messages (striptls)
        from_server = b""  # server bytes not yet framed into whole LDAP messages (trailing)
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            if upstream is not None:
                selector.register(upstream, selectors.EVENT_READ)
            while self._running():
                for key, _ in selector.select(_POLL):
                    sock = key.fileobj
                    data = sock.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    if sock is client:
                        if upstream is None:
                            continue  # blackhole: swallow
                        if self.mode == STRIPTLS:
                            pending = self._client_messages(pending + data, client, upstream)
                        else:
                            upstream.sendall(data)
                        continue
                    # From the server.
                    if self.mode in (STALL, RESET):
                        data = data[: max(0, self.after - sent)]
                    if self.mode == CORRUPT and not corrupted and sent + len(data) > self.after:
                        data, corrupted = _corrupted(data, max(2, self.after - sent))
                    if self.mode == TRAILING:
                        data, from_server = _done_doubled(from_server + data)
                    if data:
                        client.sendall(data)
                        sent += len(data)
                    if self.mode == RESET and sent >= self.after:
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return  # closing with linger 0 sends RST
                    if self.mode == STALL and sent >= self.after:
                        selector.unregister(upstream)  # type: ignore[arg-type]

    def _client_messages(
        self, data: bytes, client: socket.socket, upstream: socket.socket
    ) -> bytes:
        """Forward each whole LDAP message in ``data`` except StartTLS; return the rest."""
        while (frame := _ber_frame(data)) is not None:
            message, data = data[:frame], data[frame:]
            message_id, op, content = _ldap_request(message)
            self.client_ops.append(op)
            if op == EXTENDED_REQUEST and STARTTLS_OID in content:
                client.sendall(_extended_error(message_id, "StartTLS stripped by tcpproxy"))
            else:
                upstream.sendall(message)
        return data


def _ber_length(data: bytes, at: int) -> tuple[int, int] | None:
    """(length, offset of the contents) of the BER length at ``at``; None when incomplete."""
    if len(data) <= at:
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    if len(data) < at + 1 + count:
        return None
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), at + 1 + count


def _ber_frame(data: bytes) -> int | None:
    """The size of the first whole TLV in ``data``, or None while it is incomplete."""
    header = _ber_length(data, 1)
    if header is None or len(data) < header[1] + header[0]:
        return None
    return header[1] + header[0]


def _ldap_request(message: bytes) -> tuple[bytes, int, bytes]:
    """(messageID bytes, protocolOp tag, protocolOp contents) of one LDAPMessage."""
    outer = _ber_length(message, 1)
    assert outer is not None
    at = outer[1]
    id_length, id_at = _ber_length(message, at + 1) or (0, 0)
    message_id = message[id_at : id_at + id_length]
    op_at = id_at + id_length
    op_length, content_at = _ber_length(message, op_at + 1) or (0, 0)
    return message_id, message[op_at], message[content_at : content_at + op_length]


def _tlv(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _extended_error(message_id: bytes, text: str) -> bytes:
    """An ExtendedResponse with resultCode protocolError (2), as a server without StartTLS."""
    result = _tlv(0x0A, b"\x02") + _tlv(0x04, b"") + _tlv(0x04, text.encode())
    return _tlv(0x30, _tlv(0x02, message_id) + _tlv(0x78, result))


def _done_doubled(data: bytes) -> tuple[bytes, bytes]:
    """(what to forward, what to keep for later): the whole messages of ``data``, each
    searchResDone twice; and the incomplete one at its end."""
    forward, at = [], 0
    while (size := _ber_frame(data[at:])) is not None:
        message = data[at : at + size]
        at += size
        forward.append(message * 2 if _ldap_request(message)[1] == SEARCH_DONE else message)
    return b"".join(forward), data[at:]


def _corrupted(data: bytes, start: int) -> tuple[bytes, bool]:
    """``data`` with the SEQUENCE tag of the first mail attribute from ``start`` on made a SET
    tag, and whether there was one (in this piece of the stream)."""
    at = data.find(_MAIL_TYPE, start)
    if at < 0 or data[at - 2] != 0x30:
        return data, False
    return data[: at - 2] + b"\x31" + data[at - 1 :], True
