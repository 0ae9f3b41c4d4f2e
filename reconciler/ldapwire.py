"""A strict, fast decoder for LDAP search responses read straight off ldap3's socket.

ldap3 keeps connecting, TLS, binding and encoding requests; its response decoding is what makes
large reads slow. :class:`MessageReader` turns the bytes a server sends into LDAPMessages (RFC
4511): search entries, references and results (with the RFC 2696 paging cookie) in full, every
other response as :class:`OtherMessage` carrying only its tag. :func:`frame_message` wraps a
request ldap3 encoded once in the LDAPMessage of each page, so that a page costs no ASN.1
object building beyond its paging control.

Strict: BER with definite lengths (long form of 1-4 octets) and single-octet tags; every element
lies inside its parent, constructed elements are consumed exactly, tags are checked wherever the
grammar fixes them, integers have 1-4 octets (messageID and resultCode are non-negative), DNs,
attribute types, diagnostics and URIs are UTF-8. Controls are checked on every message. Anything
else is a :class:`ProtocolError` naming the problem and its byte offset in the message. Lenient
only where nothing can be misread: an empty referral or reference list, the sign of the paging
size estimate, non-minimal lengths (valid BER, and Active Directory sends 4-octet lengths).
Attribute types that are equal once lower-cased are merged, values in the order received.
Values are raw bytes, or with ``binary_types`` text: UTF-8 decoded, except for the attribute types
named there (objectGUID and the like), and any value that is not valid UTF-8, which stay bytes.

Fast: integer offsets into one ``bytes`` copy of each message (CPython caches small ints, so
offsets below 257 cost no allocation), headers decoded inline on the hot path, attribute types
decoded once per reader, values sliced straight out of the message — in text mode out of one
``str`` copy of a message that is all ASCII (the usual case), so no value is decoded on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, TypeAlias

from reconciler.errors import DirectoryError

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
# protocolOp tag octets (APPLICATION class, constructed); OtherMessage.tag holds such an octet.
BIND_RESPONSE = 0x61
SEARCH_ENTRY, SEARCH_DONE = 0x64, 0x65
EXTENDED_RESPONSE = 0x78  # with message id 0: an unsolicited notification (RFC 4511 4.4)
INTERMEDIATE_RESPONSE = 0x79

_PAGED = PAGED_RESULTS_OID.encode()
_MAX_TYPES = 4096  # attribute type encodings remembered per reader

Value: TypeAlias = str | bytes
# Attribute type encodings seen → (lower-cased name, whether its values are decoded as text).
_Types: TypeAlias = dict[bytes, tuple[str, bool]]


class ProtocolError(DirectoryError):
    """Data that is not a valid LDAP response, or a message larger than allowed. ``offset``
    counts from the message's first byte, ``stream_offset`` is where that message starts."""

    def __init__(self, reason: str, offset: int, stream_offset: int) -> None:
        super().__init__(
            f"invalid LDAP response from the server: {reason} at byte {offset} of the message "
            f"that starts at byte {stream_offset} of the response stream",
            "the connection cannot be used any further; if this repeats, capture the traffic",
        )
        self.reason, self.offset, self.stream_offset = reason, offset, stream_offset


class SearchEntry(NamedTuple):
    """Attribute names lower-cased (options such as ``;range=0-1499`` kept); values raw bytes,
    or text as the reader's ``binary_types`` say. A named tuple (dn, attributes): made for
    every entry read, it is built as the tuple it is."""

    dn: str
    attributes: dict[str, list[Value]]


@dataclass(frozen=True, slots=True)
class SearchReference:
    uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchDone:
    """``paged_cookie``: None without the paging control, b"" when the server sent an empty one."""

    result_code: int
    matched_dn: str
    diagnostic: str
    referrals: tuple[str, ...]
    paged_cookie: bytes | None


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Any other response; ``tag`` is its protocolOp tag octet, e.g. EXTENDED_RESPONSE."""

    tag: int


Message: TypeAlias = tuple[int, SearchEntry | SearchReference | SearchDone | OtherMessage]

# A named tuple's own constructor is a Python function: _entry makes the tuple directly.
_new_tuple = tuple.__new__


class _Bad(Exception):
    """Internal: what is wrong, and its offset in the message."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason, offset)
        self.reason, self.offset = reason, offset


def _bad_length(first: int, p: int) -> NoReturn:
    if first == 0x80:
        raise _Bad("indefinite length (not allowed in LDAP)", p)
    raise _Bad(f"length of {first & 0x7F} octets (at most 4 supported)", p)


def _fail(buf: bytes, p: int, limit: int, what: str) -> NoReturn:
    """Raise for the wrong tag at ``p``, or nothing there, where ``what`` must start."""
    if p >= limit:
        raise _Bad(f"{what} missing", p)
    raise _Bad(f"expected {what}, found tag 0x{buf[p]:02x}", p)


def _check_end(q: int, limit: int, p: int, what: str) -> None:
    """``what``, starting at ``p``, ends at ``q``: it must end exactly at ``limit``."""
    if q > limit:
        raise _Bad(f"{what} overruns its enclosing element", p)
    if q < limit:
        raise _Bad(f"{limit - q} trailing byte(s) after {what}", q)


def _element(buf: bytes, p: int, limit: int, tag: int, what: str) -> tuple[int, int]:
    """The ``tag`` element at ``p`` that must end by ``limit``: (contents start, contents end)."""
    if p >= limit or buf[p] != tag:
        _fail(buf, p, limit, what)
    n = buf[p + 1]
    q = p + 2
    if n > 127:  # long form: n & 0x7F length octets follow
        q += n & 0x7F
        n = int.from_bytes(buf[p + 2 : q]) if p + 2 < q <= p + 6 else _bad_length(n, p + 1)
    if q + n > limit:
        raise _Bad(f"{what} overruns its enclosing element", p)
    return q, q + n


def _text(buf: bytes, p: int, q: int, what: str) -> str:
    try:
        return buf[p:q].decode()
    except UnicodeDecodeError as exc:
        raise _Bad(f"invalid UTF-8 in {what}", p + exc.start) from None


def _string(buf: bytes, p: int, limit: int, what: str) -> tuple[str, int]:
    """A UTF-8 OCTET STRING at ``p``: (text, next offset)."""
    a, p = _element(buf, p, limit, 0x04, what)
    return _text(buf, a, p, what), p


def _integer(buf: bytes, p: int, limit: int, tag: int, what: str) -> tuple[int, int]:
    """A non-negative INTEGER or ENUMERATED of 1-4 octets: (value, next offset)."""
    a, q = _element(buf, p, limit, tag, what)
    if not 0 < q - a <= 4 or buf[a] > 127:
        raise _Bad(f"{what} is not a non-negative integer of 1 to 4 octets", p)
    return int.from_bytes(buf[a:q]), q


def _uris(buf: bytes, p: int, end: int) -> tuple[str, ...]:
    uris = []
    while p < end:
        uri, p = _string(buf, p, end, "URI")
        uris.append(uri)
    return tuple(uris)


def _type(
    buf: bytes, p: int, limit: int, types: _Types, binary: frozenset[str] | None
) -> tuple[tuple[str, bool], int]:
    """The attribute type at ``p``, lower-cased, and whether its values are text; remembered by
    its encoding: ((name, as text), next offset)."""
    a, q = _element(buf, p, limit, 0x04, "attribute type OCTET STRING")
    name = _text(buf, a, q, "an attribute type").lower()
    key = (name, binary is not None and name.partition(";")[0] not in binary)
    if a == p + 2 and len(types) < _MAX_TYPES:  # the short form is what _entry looks up
        types[buf[p:q]] = key
    return key, q


def _utf8(values: list[Value]) -> list[Value]:
    """Raw values as text, each one that is not UTF-8 left as bytes."""
    try:  # all of them, the usual case: no try per value
        return [value.decode() for value in values]  # type: ignore[union-attr]
    except UnicodeDecodeError:
        out: list[Value] = []
        for value in values:
            try:
                out.append(value.decode())  # type: ignore[union-attr]
            except UnicodeDecodeError:
                out.append(value)
        return out


def _entry(
    buf: bytes,
    text: str | None,
    p: int,
    end: int,
    types: _Types,
    binary: frozenset[str] | None,
) -> tuple[SearchEntry, int]:
    """The searchResEntry at ``p`` (the hot path: inlined, short forms first, and the generic
    _element where anything is unusual): (entry, offset after it). ``text``: the message decoded
    as latin-1 (one character per byte) when values are wanted as text, else None."""
    n = buf[p + 1]
    q = p + 2
    if n == 0x82:  # the usual entry: 256 bytes to 64 KiB
        n, q = buf[q] << 8 | buf[q + 1], q + 2
    elif n > 127:  # long form: n & 0x7F length octets follow
        q += n & 0x7F
        n = int.from_bytes(buf[p + 2 : q]) if p + 2 < q <= p + 6 else _bad_length(n, p + 1)
    op_end = q + n
    if op_end > end:
        raise _Bad("searchResEntry overruns the message", p)
    n = buf[q + 1]
    p = q + 2
    if n > 127 or buf[q] != 0x04:
        p, q = _element(buf, q, op_end, 0x04, "objectName OCTET STRING")
    else:
        q = p + n
        if q > op_end:
            raise _Bad("objectName overruns the searchResEntry", p - 2)
    dn = text[p:q] if text is not None else ""
    if not dn.isascii() or text is None:
        try:
            dn = buf[p:q].decode()
        except UnicodeDecodeError as exc:
            raise _Bad("invalid UTF-8 in the DN", p + exc.start) from None
    n = buf[q + 1]
    p = q + 2
    if n == 0x82 and buf[q] == 0x30:
        n, p = buf[p] << 8 | buf[p + 1], p + 2
    elif n > 127 or buf[q] != 0x30:
        p, n = _element(buf, q, op_end, 0x30, "attributes SEQUENCE")
        n -= p
    if p + n != op_end:
        _check_end(p + n, op_end, q, "attributes SEQUENCE")
    attrs: dict[str, list[Value]] = {}
    while p < op_end:  # PartialAttribute ::= SEQUENCE { type, vals SET OF value }
        if buf[p] != 0x30:
            _fail(buf, p, op_end, "PartialAttribute SEQUENCE")
        n = buf[p + 1]
        q = p + 2
        if n == 0x81:  # a many-valued attribute: 128 to 255 bytes
            n, q = buf[q], q + 1
        elif n > 127:  # long form: n & 0x7F length octets follow
            q += n & 0x7F
            n = int.from_bytes(buf[p + 2 : q]) if p + 2 < q <= p + 6 else _bad_length(n, p + 1)
        a_end = q + n
        if a_end > op_end:
            raise _Bad("PartialAttribute overruns the searchResEntry", p)
        p = q + 2 + buf[q + 1]
        key = types.get(buf[q:p])  # keyed by the whole type element, tag and length included
        if key is None:
            key, p = _type(buf, q, a_end, types, binary)
        name, as_text = key
        source: Any = text if as_text else buf  # as_text only ever with a text
        n = buf[p + 1]
        q = p + 2
        if n == 0x81:
            n, q = buf[q], q + 1
        elif n > 127:  # long form: n & 0x7F length octets follow
            q += n & 0x7F
            n = int.from_bytes(buf[p + 2 : q]) if p + 2 < q <= p + 6 else _bad_length(n, p + 1)
        if buf[p] != 0x31 or q + n != a_end:
            if buf[p] != 0x31:
                _fail(buf, p, a_end, "vals SET")
            _check_end(q + n, a_end, p, "vals SET")
        vals: list[Value]
        if 2 <= n < 130 and buf[q + 1] == n - 2 and buf[q] == 0x04:  # one short value
            value = source[q + 2 : a_end]
            # Sliced from the latin-1 text: back to the bytes received, then decoded as UTF-8.
            vals = [value] if not as_text or value.isascii() else _utf8([value.encode("latin-1")])
            p = a_end
        else:
            vals = []
            start, p = q, q
            while p < a_end:
                n = buf[p + 1]
                q = p + 2
                if n > 127 or buf[p] != 0x04:
                    q, n = _element(buf, p, a_end, 0x04, "value OCTET STRING")
                    n -= q
                p = q + n
                vals.append(source[q:p])
            if p != a_end:
                raise _Bad("value overruns its SET", q - 2)
            # (values with short headers: the SET's text is ASCII when they are)
            if (
                as_text
                and not text[start:a_end].isascii()  # type: ignore[index]
                and not all(map(str.isascii, vals))  # type: ignore[arg-type]
            ):
                vals = _utf8([v.encode("latin-1") for v in vals])  # type: ignore[union-attr]
        if name in attrs:  # the same type twice
            attrs[name] += vals
        else:
            attrs[name] = vals
    return _new_tuple(SearchEntry, (dn, attrs)), op_end


def _cookie(buf: bytes, p: int, end: int) -> bytes | None:
    """Check the Controls in buf[p:end]; the paged results cookie if that control is there."""
    cookie = None
    while p < end:  # Control ::= SEQUENCE { type, criticality DEFAULT FALSE, value OPTIONAL }
        start = p
        p, c_end = _element(buf, p, end, 0x30, "Control SEQUENCE")
        a, p = _element(buf, p, c_end, 0x04, "controlType")
        oid = buf[a:p]
        if p < c_end and buf[p] == 0x01:
            a, q = _element(buf, p, c_end, 0x01, "criticality BOOLEAN")
            if q - a != 1:
                raise _Bad("criticality is not a BOOLEAN of 1 octet", p)
            p = q
        value = None
        if p < c_end:
            value, p = _element(buf, p, c_end, 0x04, "controlValue")
        _check_end(p, c_end, p, "Control")
        if oid == _PAGED:  # value ::= SEQUENCE { size INTEGER, cookie OCTET STRING }
            if value is None or cookie is not None:
                raise _Bad("paged results control without a value, or a second one", start)
            a, q = _element(buf, value, p, 0x30, "paged results value SEQUENCE")
            _check_end(q, p, value, "paged results value")
            c, a = _element(buf, a, q, 0x02, "paged results size INTEGER")
            if not 0 < a - c <= 4:  # an estimate nobody uses: any sign will do
                raise _Bad("paged results size INTEGER is not of 1 to 4 octets", c)
            a, c = _element(buf, a, q, 0x04, "paged results cookie")
            _check_end(c, q, a, "paged results cookie")
            cookie = buf[a:c]
    return cookie


def _decode(buf: bytes, p: int, end: int, types: _Types, binary: frozenset[str] | None) -> Message:
    """The LDAPMessage buf[:end] whose contents start at ``p`` (after the SEQUENCE header)."""
    if buf[p] == 0x02 and buf[p + 1] == 1 and buf[p + 2] < 0x80 and p + 3 < end:
        msgid = buf[p + 2]  # the usual one-octet messageID
        p += 3
    elif buf[p] == 0x02 and buf[p + 1] == 2 and buf[p + 2] < 0x80 and p + 4 < end:
        msgid = buf[p + 2] << 8 | buf[p + 3]  # (from the 128th request on)
        p += 4
    else:
        msgid, p = _integer(buf, p, end, 0x02, "messageID INTEGER")
        if p >= end:
            _fail(buf, p, end, "protocolOp")
    tag = buf[p]
    op: SearchEntry | SearchReference | SearchDone | OtherMessage
    if tag == 0x64:
        # One str copy of the message, byte for byte: slices of it are the text of ASCII values.
        text = buf.decode("latin-1") if binary is not None else None
        op, op_end = _entry(buf, text, p, end, types, binary)
    elif tag & 0xE0 != 0x60 or tag & 0x1F == 0x1F:  # constructed APPLICATION, low tag number
        raise _Bad(f"protocolOp tag 0x{tag:02x} is not an LDAP response", p)
    else:
        p, op_end = _element(buf, p, end, tag, "protocolOp")
        if tag == 0x65:  # searchResDone: LDAPResult
            code, p = _integer(buf, p, op_end, 0x0A, "resultCode ENUMERATED")
            matched, p = _string(buf, p, op_end, "matchedDN")
            diagnostic, p = _string(buf, p, op_end, "diagnosticMessage")
            referrals: tuple[str, ...] = ()
            if p < op_end:
                p, q = _element(buf, p, op_end, 0xA3, "referral [3]")
                referrals, p = _uris(buf, p, q), q
            _check_end(p, op_end, p, "searchResDone")
        elif tag == 0x73:  # searchResRef
            op = SearchReference(_uris(buf, p, op_end))
        else:
            op = OtherMessage(tag)
    cookie = None
    if op_end < end:
        p, q = _element(buf, op_end, end, 0xA0, "controls [0]")
        _check_end(q, end, op_end, "controls")
        cookie = _cookie(buf, p, q)
    if tag == 0x65:
        op = SearchDone(code, matched, diagnostic, referrals, cookie)
    return msgid, op


def frame_message(message_id: int, operation: bytes, controls: tuple[bytes, ...] = ()) -> bytes:
    """An LDAPMessage (RFC 4511 4.1.1) around a protocolOp and Controls already encoded (by
    ldap3): what a paged search sends again for every page, with only the cookie changed."""
    if not 0 <= message_id < 2**31:
        raise ValueError(f"message ID {message_id} is not in 0..2**31-1")
    body = _tlv(0x02, message_id.to_bytes(message_id.bit_length() // 8 + 1)) + operation
    if controls:
        body += _tlv(0xA0, b"".join(controls))
    return _tlv(0x30, body)


def _tlv(tag: int, contents: bytes) -> bytes:
    """One element with a definite length in its shortest form."""
    n = len(contents)
    if n < 0x80:
        return bytes((tag, n)) + contents
    octets = n.to_bytes((n.bit_length() + 7) // 8)
    return bytes((tag, 0x80 | len(octets))) + octets + contents


class MessageReader:
    """Incremental: feed() raw bytes as they come off the socket; returns the complete LDAPMessages
    decoded so far, in order; keeps a partial tail buffered (less than one message).

    Raises ProtocolError as soon as the data is known to be invalid, and again on every later
    call: the stream cannot be resynchronised (messages completed earlier in the failing call
    are not returned). Truncated data is never an error, it just waits for the rest: when the
    connection ends with ``buffered`` > 0, its last message was cut off."""

    def __init__(
        self,
        max_message_size: int = 64 * 1024 * 1024,
        binary_types: frozenset[str] | None = None,
    ) -> None:
        """``max_message_size``: the largest whole LDAPMessage (header included) accepted.
        ``binary_types``: None for raw values; else values are text (UTF-8 decoded) except
        for these attribute types (lower case; options such as ``;range=`` ignored) and for
        values that are not valid UTF-8, which stay bytes."""
        self.max_message_size = max_message_size
        self.binary_types = binary_types
        self._pending = bytearray()  # the start of an incomplete message
        self._need = 1  # bytes _pending must hold before it is worth looking again
        self._consumed = 0  # stream offset of _pending[0]
        self._types: _Types = {}
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held (0 at a message boundary)."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Add ``data``; the messages it completed."""
        decode = self.decode
        # Each message decoded as soon as it is framed: the first error in the stream is the
        # one raised.
        return [decode(frame) for frame in self._framed(data)]

    def frames(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add ``data``; the messages it completed, framed but not decoded yet (each one is
        then decoded with :meth:`decode`, in order): a caller can see which is the search's
        end by :attr:`Frame.tag`, act on it, and decode the entries before it afterwards."""
        return list(self._framed(data))

    def _framed(self, data: bytes | bytearray | memoryview) -> Iterator[Frame]:
        if self._error is not None:
            raise self._error
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._need:
                return
            buf = bytes(pending)
        elif not data:
            return
        else:
            buf = data if type(data) is bytes else bytes(data)
        limit, consumed = self.max_message_size, self._consumed
        pos, size = 0, len(buf)
        try:
            while pos < size:
                if buf[pos] != 0x30:
                    raise _Bad(f"expected LDAPMessage SEQUENCE, found tag 0x{buf[pos]:02x}", 0)
                if size - pos < 2:
                    self._need = 2
                    break
                n = buf[pos + 1]
                p = pos + 2
                if n > 127:
                    p += n & 0x7F
                    if not pos + 2 < p <= pos + 6:
                        _bad_length(n, 1)
                    if p > size:
                        self._need = p - pos
                        break
                    n = int.from_bytes(buf[pos + 2 : p])
                end = p + n
                if end - pos > limit:
                    raise _Bad(f"message of {end - pos} bytes (the limit is {limit})", 0)
                if end > size:
                    self._need = end - pos
                    break
                # Its own copy: small offsets, nothing beyond it to read. The protocolOp tag
                # follows the messageID (of the usual 1 to 4 octets).
                at = (
                    p + 2 + buf[p + 1]
                    if p + 1 < end and buf[p] == 0x02 and 0 < buf[p + 1] <= 4
                    else end
                )
                tag = buf[at] if at < end else None
                yield _new_tuple(Frame, (buf[pos:end], p - pos, consumed + pos, tag))
                pos = end
        except _Bad as exc:
            self._fail(exc, consumed + pos)
        self._consumed += pos
        if pos < size:
            self._pending = bytearray(memoryview(buf)[pos:])
        elif pending:
            self._pending = bytearray()

    def decode(self, frame: Frame) -> Message:
        """The message of a frame :meth:`frames` returned."""
        if self._error is not None:
            raise self._error
        message, start = frame.message, frame.start
        try:
            try:
                return _decode(message, start, len(message), self._types, self.binary_types)
            except (_Bad, IndexError):  # again, padded: a read past the end finds "nothing"
                _decode(message + bytes(8), start, len(message), {}, self.binary_types)
                raise _Bad("undecodable message", 0) from None
        except _Bad as exc:
            self._fail(exc, frame.stream_offset)

    def _fail(self, exc: _Bad, stream_offset: int) -> NoReturn:
        self._error = ProtocolError(exc.reason, exc.offset, stream_offset)
        self._pending = bytearray()
        raise self._error from None


class Frame(NamedTuple):
    """One whole LDAPMessage as received: its bytes, where its contents start (after the
    SEQUENCE header), where it starts in the response stream, and its protocolOp tag octet
    (SEARCH_ENTRY…) when the messageID before it is one of the usual 1-4 octets, else None
    (only decoding tells)."""

    message: bytes
    start: int
    stream_offset: int
    tag: int | None
