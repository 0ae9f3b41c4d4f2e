"""A proxy on 127.0.0.1 that makes a real slapd answer like Active Directory for large
multi-valued attributes: range retrieval (no mocks: every entry and value is slapd's own).

AD returns at most 1500 values of an attribute such as ``member`` per response, as
``member;range=0-1499``; a client asks for the rest with ``member;range=1500-*`` and gets
``member;range=1500-2999`` … until a chunk ends in ``-*``. OpenLDAP has no such limit, so this
proxy cuts the values of ``attribute`` in search results to ``chunk`` and turns a requested
``attribute;range=L-*`` into a request for the whole attribute whose answer it cuts at L.
``ranged`` counts the ranged chunks it sent.
"""

from __future__ import annotations

import selectors
import socket
import threading
from dataclasses import dataclass, field

from tcpproxy import _ber_frame, _ber_length, _tlv

SEARCH_REQUEST, SEARCH_ENTRY = 0x63, 0x64


@dataclass
class _Node:
    tag: int
    raw: bytes  # the whole TLV
    content: bytes


def _nodes(data: bytes) -> list[_Node]:
    nodes, at = [], 0
    while at < len(data):
        length, start = _ber_length(data, at + 1) or (0, 0)
        nodes.append(_Node(data[at], data[at : start + length], data[start : start + length]))
        at = start + length
    return nodes


@dataclass
class RangeProxy:
    target: tuple[str, int]
    attribute: str = "member"
    chunk: int = 1500
    ranged: int = 0
    _wanted: dict[int, int] = field(default_factory=dict)  # message id -> first value asked
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def __enter__(self) -> RangeProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            self._pump(client, socket.create_connection(self.target, timeout=5))
        except OSError:  # either side went away: the client sees a closed connection
            client.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        buffers = {client: b"", upstream: b""}
        with client, upstream, selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        return
                    pending = buffers[sock] + data
                    other = upstream if sock is client else client
                    while (size := _ber_frame(pending)) is not None:
                        message, pending = pending[:size], pending[size:]
                        rewrite = self._request if sock is client else self._response
                        other.sendall(rewrite(message))
                    buffers[sock] = pending

    def _request(self, message: bytes) -> bytes:
        message_id, op, *rest = _nodes(_nodes(message)[0].content)
        if op.tag != SEARCH_REQUEST:
            return message
        *fields, attributes = _nodes(op.content)
        names = []
        for node in _nodes(attributes.content):
            name = node.content.decode()
            base, _, wanted = name.partition(";range=")
            if base.lower() == self.attribute.lower() and wanted:
                self._wanted[int.from_bytes(message_id.content, "big")] = int(wanted.split("-")[0])
                name = base
            names.append(_tlv(0x04, name.encode()))
        content = b"".join(f.raw for f in fields) + _tlv(0x30, b"".join(names))
        body = message_id.raw + _tlv(SEARCH_REQUEST, content) + b"".join(r.raw for r in rest)
        return _tlv(0x30, body)

    def _response(self, message: bytes) -> bytes:
        message_id, op, *rest = _nodes(_nodes(message)[0].content)
        if op.tag != SEARCH_ENTRY:
            return message
        name, attributes = _nodes(op.content)
        first = self._wanted.get(int.from_bytes(message_id.content, "big"), 0)
        parts = []
        for attribute in _nodes(attributes.content):
            kind, values = _nodes(attribute.content)
            listed = _nodes(values.content)
            if kind.content.decode().lower() == self.attribute.lower() and (
                first or len(listed) > self.chunk
            ):
                shown = listed[first : first + self.chunk]
                last = first + len(shown) - 1
                end = "*" if first + len(shown) >= len(listed) else str(last)
                label = f"{kind.content.decode()};range={first}-{end}".encode()
                self.ranged += 1
                kind = _Node(0x04, _tlv(0x04, label), label)
                values = _Node(0x31, _tlv(0x31, b"".join(v.raw for v in shown)), b"")
            parts.append(_tlv(0x30, kind.raw + values.raw))
        entry = _tlv(SEARCH_ENTRY, name.raw + _tlv(0x30, b"".join(parts)))
        return _tlv(0x30, message_id.raw + entry + b"".join(r.raw for r in rest))
