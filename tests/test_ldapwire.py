"""reconciler.ldapwire: the search response decoder that reads straight from ldap3's socket.

Three kinds of evidence: real slapd responses (recorded by a proxy while ldap3 searches) decode to
exactly what ldap3 made of them; hand-built messages cover every operation, length form and
malformation, each error naming its byte offset; Hypothesis feeds random, mutated and randomly
generated valid streams in random chunks. tests/fixtures/ldapwire/paged_search.ber is a small
recording for the offline test; ``python tests/test_ldapwire.py`` records it again.
"""

from __future__ import annotations

import base64
import random
import selectors
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ldap3 import BASE, NONE, SUBTREE, Connection, Server
from ldap3.strategy.base import BaseStrategy
from ldap3.strategy.sync import LDAP_MESSAGE_TEMPLATE
from ldap3.utils.asn1 import decode_message_fast, decoder
from slapd import BASE_DN, SlapdServer

from reconciler.errors import DirectoryError
from reconciler.ldapwire import (
    BIND_RESPONSE,
    EXTENDED_RESPONSE,
    INTERMEDIATE_RESPONSE,
    PAGED_RESULTS_OID,
    Message,
    MessageReader,
    OtherMessage,
    ProtocolError,
    SearchDone,
    SearchEntry,
    SearchReference,
    frame_message,
)

FIXTURE = Path(__file__).parent / "fixtures" / "ldapwire" / "paged_search.ber"
PEOPLE = f"ou=People,{BASE_DN}"
GUID = bytes.fromhex("9d546f9c723b359b275d748825ee4a37")  # not valid UTF-8
NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"

# --- a small BER encoder (test side) --------------------------------------------------------


def length(n: int, octets: int = 0) -> bytes:
    """Shortest BER length, or the long form with ``octets`` octets (at least as many as needed)."""
    if not octets and n < 0x80:
        return bytes([n])
    octets = max(octets, (n.bit_length() + 7) // 8, 1)
    return bytes([0x80 | octets]) + n.to_bytes(octets, "big")


def tlv(tag: int, *parts: bytes, octets: int = 0) -> bytes:
    content = b"".join(parts)
    return bytes([tag]) + length(len(content), octets) + content


def string(value: str | bytes, octets: int = 0) -> bytes:
    return tlv(0x04, value.encode() if isinstance(value, str) else value, octets=octets)


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def message(
    msgid: int, op: bytes, controls: Sequence[bytes] | None = None, octets: int = 0
) -> bytes:
    tail = [] if controls is None else [tlv(0xA0, *controls)]
    return tlv(0x30, integer(msgid), op, *tail, octets=octets)


def entry(
    dn: str | bytes, attributes: Sequence[tuple[str, Sequence[bytes]]], octets: int = 0
) -> bytes:
    partial = [
        tlv(0x30, string(name), tlv(0x31, *map(string, values), octets=octets), octets=octets)
        for name, values in attributes
    ]
    return tlv(0x64, string(dn), tlv(0x30, *partial, octets=octets), octets=octets)


def result(
    tag: int, code: int = 0, matched: str = "", diagnostic: str = "", *extra: bytes
) -> bytes:
    return tlv(tag, integer(code, 0x0A), string(matched), string(diagnostic), *extra)


def done(
    code: int = 0, matched: str = "", diagnostic: str = "", referrals: Sequence[str] = ()
) -> bytes:
    extra = [tlv(0xA3, *map(string, referrals))] if referrals else []
    return result(0x65, code, matched, diagnostic, *extra)


def control(oid: str, value: bytes | None = None, critical: bool | None = None) -> bytes:
    parts = [string(oid)]
    if critical is not None:
        parts.append(tlv(0x01, b"\xff" if critical else b"\x00"))
    if value is not None:
        parts.append(string(value))
    return tlv(0x30, *parts)


def paged(cookie: bytes, size: int = 0) -> bytes:
    return control(PAGED_RESULTS_OID, tlv(0x30, integer(size), string(cookie)))


def decode_all(data: bytes, chunks: Sequence[int] = (), **kwargs: int) -> list[Message]:
    """Feed ``data`` in pieces of the given sizes (cycled; all at once if none); the stream must
    end at a message boundary."""
    reader = MessageReader(**kwargs)
    out: list[Message] = []
    pos, i, sizes = 0, 0, list(chunks) or [len(data) or 1]
    while pos < len(data):
        step = sizes[i % len(sizes)]
        out += reader.feed(data[pos : pos + step])
        pos, i = pos + step, i + 1
    assert reader.buffered == 0
    return out


def error(data: bytes, **kwargs: int) -> ProtocolError:
    reader = MessageReader(**kwargs)
    with pytest.raises(ProtocolError) as info:
        reader.feed(data)
    with pytest.raises(ProtocolError):  # the reader stays failed
        reader.feed(b"")
    return info.value


# --- hand-built messages: every operation and length form -----------------------------------

ALICE = [("mail", [b"alice@example.com"]), ("proxyAddresses", [b"SMTP:a@x", b"smtp:b@x"])]


def test_a_search_entry_decodes_with_lower_cased_names_and_raw_values() -> None:
    data = message(
        3, entry("uid=Alice,ou=People,dc=example,dc=com", [*ALICE, ("objectGUID", [GUID])])
    )
    assert decode_all(data) == [
        (
            3,
            SearchEntry(
                "uid=Alice,ou=People,dc=example,dc=com",
                {
                    "mail": [b"alice@example.com"],
                    "proxyaddresses": [b"SMTP:a@x", b"smtp:b@x"],
                    "objectguid": [GUID],
                },
            ),
        )
    ]


def test_entry_edge_cases_empty_dn_no_attributes_empty_values_options_and_repeats() -> None:
    ops = [
        entry("", []),
        entry("cn=x", [("cn", []), ("member;range=0-1499", [b""] * 3)]),
        entry("cn=Jürgen Müller,o=李雷", [("CN", [b"a"]), ("cn", [b"b"]), ("Cn", [b"c", b"d"])]),
    ]
    assert [op for _, op in decode_all(b"".join(message(i, op) for i, op in enumerate(ops)))] == [
        SearchEntry("", {}),
        SearchEntry("cn=x", {"cn": [], "member;range=0-1499": [b"", b"", b""]}),
        SearchEntry("cn=Jürgen Müller,o=李雷", {"cn": [b"a", b"b", b"c", b"d"]}),
    ]


def test_search_reference_and_done_with_and_without_referrals_and_paging() -> None:
    uris = ("ldap://x/ou=Remote,dc=example,dc=com", "ldaps://y/ou=Remote,dc=example,dc=com??sub")
    data = b"".join(
        [
            message(5, tlv(0x73, *map(string, uris))),
            message(5, done(0), [paged(b"\x00\x01cookie", size=12)]),
            message(6, done(10, "dc=example,dc=com", "referral", referrals=uris)),
            message(7, done(4, diagnostic="size limit exceeded"), [paged(b"")]),
            message(8, done(), []),  # an empty controls element
        ]
    )
    assert decode_all(data) == [
        (5, SearchReference(uris)),
        (5, SearchDone(0, "", "", (), b"\x00\x01cookie")),
        (6, SearchDone(10, "dc=example,dc=com", "referral", uris, None)),
        (7, SearchDone(4, "", "size limit exceeded", (), b"")),
        (8, SearchDone(0, "", "", (), None)),
    ]


def test_other_controls_are_checked_and_skipped() -> None:
    controls = [
        control("1.2.3.4"),
        control("1.2.3.5", critical=True),
        control("1.2.3.6", b"\x30\x00", critical=False),
        paged(b"c", size=2**31 - 1),
        control("2.16.840.1.113730.3.4.10", b"anything"),
    ]
    assert decode_all(message(2, done(), controls)) == [(2, SearchDone(0, "", "", (), b"c"))]
    assert decode_all(message(2, entry("cn=a", []), controls)) == [(2, SearchEntry("cn=a", {}))]


def test_other_operations_come_back_as_their_tag() -> None:
    notice = result(
        0x78, 52, "", "server shutting down", tlv(0x8A, NOTICE_OF_DISCONNECTION.encode())
    )
    data = b"".join(
        [
            message(1, result(0x61, 0)),
            message(2, tlv(0x79, tlv(0x80, b"1.3.6.1.4.1.4203.1.9.1.4"), tlv(0x81, b"\x30\x00"))),
            message(0, notice),
            message(3, tlv(0x67, b"")),  # a modifyResponse, however malformed inside
        ]
    )
    assert decode_all(data) == [
        (1, OtherMessage(BIND_RESPONSE)),
        (2, OtherMessage(INTERMEDIATE_RESPONSE)),
        (0, OtherMessage(EXTENDED_RESPONSE)),
        (3, OtherMessage(0x67)),
    ]


@pytest.mark.parametrize("octets", [1, 2, 3, 4])
def test_long_form_lengths_of_every_size(octets: int) -> None:
    big = [("description", [b"x" * 300, b"y" * 70_000])] if octets > 1 else [("cn", [b"z" * 200])]
    data = message(2**31 - 1, entry("cn=a", big, octets=octets), [paged(b"k")], octets=octets)
    data += message(2**31 - 1, done(), [paged(b"k" * 200)], octets=octets)
    assert decode_all(data, chunks=[4096]) == [
        (2**31 - 1, SearchEntry("cn=a", {name: list(values) for name, values in big})),
        (2**31 - 1, SearchDone(0, "", "", (), b"k" * 200)),
    ]


def string4(value: str | bytes) -> bytes:
    return string(value, octets=4)


def test_long_forms_in_every_string_and_integer() -> None:
    """Long form where nobody needs it (legal BER): DN, type, value, integers, cookie."""
    op = tlv(0x64, string4("cn=a"), tlv(0x30, tlv(0x30, string4("cn"), tlv(0x31, string4(b"v")))))
    value = tlv(0x30, tlv(0x02, b"\x05", octets=2), string4(b"ck"))
    ctl = tlv(0x30, string4(PAGED_RESULTS_OID), tlv(0x01, b"\x00", octets=1), string4(value))
    data = tlv(0x30, tlv(0x02, b"\x07", octets=1), op, tlv(0xA0, ctl))
    data += tlv(
        0x30, tlv(0x02, b"\x07"), tlv(0x65, tlv(0x0A, b"\x00", octets=3), string4(""), string4(""))
    )
    assert decode_all(data) == [
        (7, SearchEntry("cn=a", {"cn": [b"v"]})),
        (7, SearchDone(0, "", "", (), None)),
    ]


def test_bytearray_and_memoryview_input_and_empty_feeds() -> None:
    data = message(2, entry("cn=a", ALICE)) * 2
    reader = MessageReader()
    assert reader.feed(b"") == []
    first = reader.feed(bytearray(data[:10]))
    assert first == [] and reader.buffered == 10
    assert reader.feed(b"") == [] and reader.buffered == 10
    assert len(reader.feed(memoryview(data)[10:])) == 2 and reader.buffered == 0


# --- truncation: never an error, nothing until complete --------------------------------------

RICH_ENTRY = message(
    300,
    entry("cn=Jürgen,dc=example,dc=com", [*ALICE, ("objectGUID", [GUID]), ("x", [b"y" * 200])]),
    [control("1.2.3", b"v", critical=True), paged(b"cookie")],
)
RICH_DONE = message(300, done(4, BASE_DN, "limit", ["ldap://x/"]), [paged(b"")], octets=4)
RICH = RICH_ENTRY + RICH_DONE


def test_truncated_at_every_byte_position_waits_for_the_rest() -> None:
    expected = decode_all(RICH)
    assert [type(op) for _, op in expected] == [SearchEntry, SearchDone]
    first = len(RICH_ENTRY)
    for cut in range(1, len(RICH)):
        if cut == first:
            continue
        reader = MessageReader()
        got = reader.feed(RICH[:cut])
        assert got == (expected[:1] if cut > first else []), cut  # only what is complete
        assert reader.buffered == (cut - first if cut > first else cut) > 0, cut
        assert got + reader.feed(RICH[cut:]) == expected, cut
        assert reader.buffered == 0


def test_one_byte_at_a_time_and_random_chunks() -> None:
    expected = decode_all(RICH)
    assert decode_all(RICH * 3, chunks=[1]) == expected * 3
    rng = random.Random(4511)
    for _ in range(50):
        assert decode_all(RICH * 3, chunks=[rng.randint(1, 700) for _ in range(7)]) == expected * 3


# --- malformed data: ProtocolError naming what and where -------------------------------------

GOOD = message(2, entry("cn=a", [("cn", [b"v"])]))  # byte by byte: see the test below


def replace(data: bytes, at: int, new: bytes, remove: int = 1) -> bytes:
    return data[:at] + new + data[at + remove :]


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"\x31\x00", "expected LDAPMessage SEQUENCE, found tag 0x31", 0),
        (b"\x30\x80\x02\x01\x01\x61\x00\x00\x00", "indefinite length", 1),
        (b"\x30\x85\x00\x00\x00\x00\x05", "length of 5 octets", 1),
        (
            tlv(0x30, b"\x04\x01\x01", tlv(0x64, b"")),
            "expected messageID INTEGER, found tag 0x04",
            2,
        ),
        (tlv(0x30, b"\x02\x00", done()), "messageID INTEGER is not a non-negative integer", 2),
        (tlv(0x30, b"\x02\x05\x01\x00\x00\x00\x00", done()), "messageID INTEGER is not", 2),
        (tlv(0x30, b"\x02\x01\xff", done()), "messageID INTEGER is not", 2),
        (tlv(0x30, b"\x02\x01\x01"), "protocolOp missing", 5),
        (tlv(0x30, b"\x02\x01\x01\x64\x80\x00\x00"), "indefinite length", 6),
        (replace(GOOD, 6, b"\x14"), "searchResEntry overruns the message", 5),
        (tlv(0x30, GOOD[2:], b"\x00"), "expected controls [0], found tag 0x00", 26),
        (tlv(0x30, GOOD[2:], b"\xa0\x00\x00"), "1 trailing byte(s) after controls", 28),
        (tlv(0x30, GOOD[2:], b"\xa0\x01"), "controls [0] overruns", 26),
        (replace(GOOD, 7, b"\x05"), "expected objectName OCTET STRING, found tag 0x05", 7),
        (replace(GOOD, 8, b"\x14"), "objectName overruns the searchResEntry", 7),
        (replace(GOOD, 8, b"\x0f"), "expected attributes SEQUENCE, found tag 0x01", 24),
        (replace(GOOD, 13, b"\x31"), "expected attributes SEQUENCE, found tag 0x31", 13),
        (replace(GOOD, 14, b"\x0c"), "attributes SEQUENCE overruns", 13),
        (replace(GOOD, 14, b"\x07"), "4 trailing byte(s) after attributes SEQUENCE", 22),
        (replace(GOOD, 15, b"\x31"), "expected PartialAttribute SEQUENCE, found tag 0x31", 15),
        (replace(GOOD, 16, b"\x0c"), "PartialAttribute overruns the searchResEntry", 15),
        (replace(GOOD, 17, b"\x30"), "expected attribute type OCTET STRING, found tag 0x30", 17),
        (replace(GOOD, 18, b"\x09"), "overruns its enclosing element", 17),
        (replace(GOOD, 21, b"\x30"), "expected vals SET, found tag 0x30", 21),
        (replace(GOOD, 22, b"\x05"), "vals SET overruns", 21),
        (replace(GOOD, 23, b"\x02"), "expected value OCTET STRING, found tag 0x02", 23),
        (replace(GOOD, 24, b"\x02"), "value overruns its SET", 23),
        (replace(GOOD, 5, b"\x44"), "protocolOp tag 0x44 is not an LDAP response", 5),
        (replace(GOOD, 5, b"\x7f"), "protocolOp tag 0x7f is not an LDAP response", 5),
        (replace(GOOD, 5, b"\xa4"), "protocolOp tag 0xa4 is not an LDAP response", 5),
        (replace(GOOD, 9, b"\xff"), "invalid UTF-8 in the DN", 9),
        (replace(GOOD, 19, b"\xc3"), "invalid UTF-8 in an attribute type", 19),
    ],
)
def test_malformed_messages(data: bytes, reason: str, offset: int) -> None:
    exc = error(data)
    assert reason in exc.reason
    assert exc.offset == offset
    assert f"at byte {offset} of the message" in str(exc)
    assert isinstance(exc, DirectoryError)


def test_the_message_the_malformed_cases_start_from_is_valid() -> None:
    layout = "30 18 02 01 02 64 13 04 04 63 6e 3d 61 30 0b 30 09 04 02 63 6e 31 03 04 01 76"
    assert GOOD.hex(" ") == layout
    assert decode_all(GOOD) == [(2, SearchEntry("cn=a", {"cn": [b"v"]}))]


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        (
            tlv(0x64, string("cn=a"), tlv(0x30), b"\x00"),
            "1 trailing byte(s) after attributes SEQUENCE",
        ),
        (
            tlv(0x64, string("cn=a"), tlv(0x30, tlv(0x30, string("cn"), tlv(0x31), b"\x04"))),
            "trailing byte(s) after vals SET",
        ),
        (tlv(0x64, string("cn=a"), tlv(0x30, tlv(0x30, string("cn")))), "vals SET missing"),
        (tlv(0x64, string("cn=a")), "attributes SEQUENCE missing"),
        (tlv(0x65, integer(0, 0x0A), string(""), b"\x04\x05ab"), "diagnosticMessage overruns"),
        (tlv(0x65, integer(0, 0x0A), string("")), "diagnosticMessage missing"),
        (
            tlv(0x65, integer(0), string(""), string("")),
            "expected resultCode ENUMERATED, found tag 0x02",
        ),
        (
            tlv(0x65, integer(-1, 0x0A), string(""), string("")),
            "resultCode ENUMERATED is not a non-negative",
        ),
        (tlv(0x65, integer(0, 0x0A), string(b"\xff"), string("")), "invalid UTF-8 in matchedDN"),
        (
            tlv(0x65, integer(0, 0x0A), string(""), string(b"\xc3(")),
            "invalid UTF-8 in diagnosticMessage",
        ),
        (
            result(0x65, 0, "", "", tlv(0xA3, string("x")), b"\x04\x00"),
            "trailing byte(s) after searchResDone",
        ),
        (result(0x65, 0, "", "", tlv(0xA4)), "expected referral [3], found tag 0xa4"),
        (result(0x65, 0, "", "", tlv(0xA3, string(b"ldap://\xff"))), "invalid UTF-8 in URI"),
        (tlv(0x73, string("ldap://x/"), tlv(0x30)), "expected URI, found tag 0x30"),
    ],
)
def test_malformed_operations(op: bytes, reason: str) -> None:
    assert reason in error(message(2, op)).reason


def test_empty_sequences_where_rfc_4511_wants_at_least_one_are_accepted() -> None:
    """An empty referral or reference carries nothing to misread; rejecting it would only make a
    quirky server unusable."""
    data = message(2, result(0x65, 10, "", "", tlv(0xA3))) + message(2, tlv(0x73))
    assert decode_all(data) == [(2, SearchDone(10, "", "", (), None)), (2, SearchReference(()))]


@pytest.mark.parametrize(
    ("controls", "reason"),
    [
        ([tlv(0x31)], "expected Control SEQUENCE, found tag 0x31"),
        ([tlv(0x30)], "controlType missing"),
        (
            [tlv(0x30, string("1.2"), tlv(0x01, b"\x00\x00"))],
            "criticality is not a BOOLEAN of 1 octet",
        ),
        (
            [tlv(0x30, string("1.2"), tlv(0x01, b"\x00"), tlv(0x01, b"\x00"))],
            "expected controlValue",
        ),
        ([tlv(0x30, string("1.2"), string(""), string(""))], "trailing byte(s) after Control"),
        ([control(PAGED_RESULTS_OID)], "paged results control without a value"),
        ([paged(b"a"), paged(b"b")], "or a second one"),
        ([control(PAGED_RESULTS_OID, b"")], "paged results value SEQUENCE missing"),
        (
            [control(PAGED_RESULTS_OID, tlv(0x30, integer(0), string(b"")) + b"\x00")],
            "trailing byte(s) after paged results value",
        ),
        ([control(PAGED_RESULTS_OID, tlv(0x30, integer(0)))], "paged results cookie missing"),
        (
            [control(PAGED_RESULTS_OID, tlv(0x30, integer(0), string(b""), b"\x00"))],
            "trailing byte(s) after paged results cookie",
        ),
        (
            [control(PAGED_RESULTS_OID, tlv(0x30, tlv(0x02, b"\0" * 5), string(b"")))],
            "size INTEGER is not",
        ),
        (
            [control(PAGED_RESULTS_OID, tlv(0x30, string(b""), string(b"")))],
            "expected paged results size",
        ),
    ],
)
def test_malformed_controls(controls: list[bytes], reason: str) -> None:
    assert reason in error(message(2, done(), controls)).reason


def test_errors_report_the_offset_within_the_message_and_of_the_message_in_the_stream() -> None:
    bad = replace(GOOD, 9, b"\xff")
    reader = MessageReader()
    assert len(reader.feed(GOOD * 2)) == 2
    with pytest.raises(ProtocolError) as info:
        reader.feed(GOOD + bad)
    assert (info.value.offset, info.value.stream_offset) == (9, 3 * len(GOOD))
    assert f"at byte 9 of the message that starts at byte {3 * len(GOOD)} of the" in str(info.value)


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (tlv(0x30, b"\x02"), "messageID INTEGER overruns its enclosing element", 2),
        (tlv(0x30, b"\x02\x01\x01\x64"), "searchResEntry overruns the message", 5),
        (tlv(0x30, GOOD[2:], b"\xa0"), "controls [0] overruns its enclosing element", 26),
    ],
)
def test_a_message_ending_inside_an_element_header(data: bytes, reason: str, offset: int) -> None:
    """The decoder reads a header's octets before checking them against the message's end;
    whatever follows the message (here: nothing) must not change the verdict."""
    for following in (b"", GOOD):
        exc = error(data + following)
        assert (exc.reason, exc.offset) == (reason, offset)


def test_an_error_is_the_same_whether_the_attribute_type_was_seen_before() -> None:
    """Known attribute types take a shortcut; a malformed message is judged without it."""
    bad = replace(GOOD, 16, b"\x03")  # the PartialAttribute ends inside its type "cn"
    fresh, warm = error(bad), MessageReader()
    assert warm.feed(GOOD) == decode_all(GOOD)
    with pytest.raises(ProtocolError) as info:
        warm.feed(bad)
    assert (info.value.reason, info.value.offset) == (fresh.reason, fresh.offset)
    assert "attribute type OCTET STRING overruns" in fresh.reason


def test_more_attribute_types_than_the_reader_remembers() -> None:
    attributes = [(f"Attr{i}", [str(i).encode()]) for i in range(5000)]
    data = b"".join(message(2, entry("cn=a", attributes[i : i + 500])) for i in range(0, 5000, 500))
    assert (
        decode_all(data * 2, chunks=[65536])
        == [
            (2, SearchEntry("cn=a", {n.lower(): v for n, v in attributes[i : i + 500]}))
            for i in range(0, 5000, 500)
        ]
        * 2
    )


def test_an_oversized_message_fails_as_soon_as_its_header_says_so() -> None:
    reader = MessageReader(max_message_size=1000)
    assert reader.feed(b"\x30\x84\x00\x00") == []
    with pytest.raises(ProtocolError, match=r"message of 1006 bytes \(the limit is 1000\)"):
        reader.feed(b"\x03\xe8")
    assert (
        "message of 65542 bytes"
        in error(b"\x30\x84\x00\x01\x00\x00", max_message_size=65535).reason
    )
    assert (
        "bytes (the limit is 20)"
        in error(message(1, entry("cn=a", ALICE)), max_message_size=20).reason
    )
    assert decode_all(GOOD, max_message_size=len(GOOD)) == decode_all(GOOD)
    with pytest.raises(ProtocolError, match="message of 4294967301 bytes"):
        MessageReader().feed(b"\x30\x84\xff\xff\xff\xff")


# --- Hypothesis ------------------------------------------------------------------------------


def chunked_or_error(data: bytes, sizes: list[int]) -> tuple[list[Message], int] | ProtocolError:
    """What a reader makes of ``data`` fed in ``sizes`` pieces: messages and bytes left, or the
    error (any other exception fails the test)."""
    reader = MessageReader(max_message_size=4096)
    out: list[Message] = []
    try:
        for piece in pieces(data, sizes):
            out += reader.feed(piece)
    except ProtocolError as exc:
        return exc
    return out, reader.buffered


def pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``data`` cut in pieces of ``sizes`` (cycled)."""
    pos, i = 0, 0
    while pos < len(data):
        yield data[pos : pos + sizes[i % len(sizes)]]
        pos += sizes[i % len(sizes)]
        i += 1


def check_consistent(data: bytes, sizes: list[int]) -> None:
    """Whole or chunked, the same messages or the same error; nothing but ProtocolError."""
    whole = chunked_or_error(data, [len(data) or 1])
    pieces = chunked_or_error(data, sizes)
    if isinstance(whole, ProtocolError):
        assert isinstance(pieces, ProtocolError)
        assert (pieces.reason, pieces.offset, pieces.stream_offset) == (
            whole.reason,
            whole.offset,
            whole.stream_offset,
        )
    else:
        assert pieces == whole


CHUNKS = st.lists(st.integers(1, 64), min_size=1, max_size=8)
ANY_BYTES = st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"\x30" + b))


@settings(max_examples=400, deadline=1000)
@given(data=ANY_BYTES, sizes=CHUNKS)
def test_random_bytes_are_messages_or_a_protocol_error(data: bytes, sizes: list[int]) -> None:
    check_consistent(data, sizes)


TEXT = st.text(max_size=20)
ATTRIBUTES = st.dictionaries(
    st.text(min_size=1, max_size=12).map(str.lower),
    st.lists(st.binary(max_size=40), max_size=4),
    max_size=5,
)
FORMS = st.sampled_from([0, 0, 0, 1, 2, 4])


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[bytes, Message]:
    """One random valid message (random long forms included) and what it must decode to."""
    msgid = draw(st.integers(0, 2**31 - 1))
    form = draw(FORMS)
    kind = draw(st.sampled_from(["entry", "entry", "reference", "done", "other"]))
    cookie = draw(st.none() | st.binary(max_size=20))
    controls = [paged(cookie)] if cookie is not None else None
    if kind == "entry":
        dn, attributes = draw(TEXT), draw(ATTRIBUTES)
        swapped = [(n.swapcase() if draw(st.booleans()) else n, v) for n, v in attributes.items()]
        # "ß".swapcase().lower() is "ss": two names may meet, and their values are merged.
        merged: dict[str, list[bytes]] = {}
        for name, values in swapped:
            merged.setdefault(name.lower(), []).extend(values)
        expected: Any = SearchEntry(dn, merged)
        op = entry(dn, swapped, octets=form)
    elif kind == "reference":
        uris = draw(st.lists(TEXT, min_size=1, max_size=3))
        op, expected = tlv(0x73, *map(string, uris), octets=form), SearchReference(tuple(uris))
    elif kind == "done":
        code, matched, diagnostic = draw(st.integers(0, 2**31 - 1)), draw(TEXT), draw(TEXT)
        referrals = draw(st.lists(TEXT, max_size=2))
        op = done(code, matched, diagnostic, referrals)
        expected = SearchDone(code, matched, diagnostic, tuple(referrals), cookie)
    else:
        tag = draw(st.sampled_from([0x61, 0x67, 0x78, 0x79]))
        op, expected = tlv(tag, draw(st.binary(max_size=30))), OtherMessage(tag)
    return message(msgid, op, controls, octets=form), (msgid, expected)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(valid_messages(), min_size=1, max_size=5), sizes=CHUNKS)
def test_random_valid_messages_round_trip(
    messages: list[tuple[bytes, Message]], sizes: list[int]
) -> None:
    data = b"".join(encoded for encoded, _ in messages)
    assert decode_all(data, chunks=sizes) == [expected for _, expected in messages]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(
        b"".join(encoded for encoded, _ in draw(st.lists(valid_messages(), min_size=1, max_size=3)))
    )
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif at < len(data):
            if how == "delete":
                del data[at]
            elif how == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            else:
                data[at] = draw(st.sampled_from([0x00, 0x04, 0x30, 0x31, 0x80, 0x81, 0x84, 0xFF]))
    return bytes(data)


@settings(max_examples=500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), sizes=CHUNKS)
def test_mutated_valid_messages_are_messages_or_a_protocol_error(
    data: bytes, sizes: list[int]
) -> None:
    check_consistent(data, sizes)


# --- text mode: values decoded as UTF-8 except binary attribute types ----------------------

BINARY = frozenset({"objectguid", "objectsid"})


def as_text(op: Any) -> Any:
    """What text mode must make of a raw-mode operation."""
    if not isinstance(op, SearchEntry):
        return op

    def value(name: str, raw: bytes) -> str | bytes:
        if name.partition(";")[0] in BINARY:
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw

    return SearchEntry(
        op.dn,
        {n: [value(n, v) for v in vs] for n, vs in op.attributes.items()},  # type: ignore[arg-type]
    )


def test_text_mode_decodes_values_but_keeps_binary_types_and_non_utf8_values_as_bytes() -> None:
    long_value = "X500:/o=Example/ou=Exchange Administrative Group/cn=Recipients/cn=" + "j" * 90
    data = message(
        4,
        entry(
            "cn=Jürgen Müller,ou=People,dc=example,dc=com",
            [
                ("mail", [b"jm@example.com"]),
                ("displayName", ["Jürgen Müller".encode()]),
                ("proxyAddresses", [b"SMTP:jm@example.com", long_value.encode()]),
                ("ObjectGUID", [b"0123456789abcdef"]),  # bytes even when they are ASCII
                ("objectSid;binary", [b"\x01\x05\xff"]),
                ("description", [b"ok", b"caf\xe9"]),  # latin-1, not UTF-8: stays bytes
                ("member;range=0-1", [b"cn=a", "cn=ü".encode()]),
            ],
        ),
    )
    assert MessageReader(binary_types=BINARY).feed(data) == [
        (
            4,
            SearchEntry(
                "cn=Jürgen Müller,ou=People,dc=example,dc=com",
                {
                    "mail": ["jm@example.com"],
                    "displayname": ["Jürgen Müller"],
                    "proxyaddresses": ["SMTP:jm@example.com", long_value],
                    "objectguid": [b"0123456789abcdef"],
                    "objectsid;binary": [b"\x01\x05\xff"],
                    "description": ["ok", b"caf\xe9"],
                    "member;range=0-1": ["cn=a", "cn=ü"],
                },
            ),
        )
    ]


def test_text_mode_still_refuses_a_dn_that_is_not_utf8() -> None:
    data = message(1, entry(b"cn=caf\xe9", [("cn", [b"x"])]))
    with pytest.raises(ProtocolError, match="invalid UTF-8 in the DN"):
        MessageReader(binary_types=BINARY).feed(data)


@st.composite
def mixed_messages(draw: st.DrawFn) -> bytes:
    """Valid messages whose entries may carry binary types and values that are not UTF-8."""
    parts = []
    for encoded, _ in draw(st.lists(valid_messages(), min_size=1, max_size=3)):
        parts.append(encoded)
        names = draw(
            st.lists(st.sampled_from(["objectGUID", "cn", "objectSid;binary"]), max_size=2)
        )
        values = [(n, draw(st.lists(st.binary(max_size=20), max_size=3))) for n in names]
        parts.append(message(draw(st.integers(0, 127)), entry(draw(TEXT), values)))
    return b"".join(parts)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mixed_messages(), mutated()), sizes=CHUNKS)
def test_text_mode_is_raw_mode_decoded_and_fails_the_same_way(
    data: bytes, sizes: list[int]
) -> None:
    raw, text = MessageReader(), MessageReader(binary_types=BINARY)
    outcomes = []
    for reader in (raw, text):
        out: list[Message] = []
        try:
            pos, i = 0, 0
            while pos < len(data):
                out += reader.feed(data[pos : pos + sizes[i % len(sizes)]])
                pos, i = pos + sizes[i % len(sizes)], i + 1
        except ProtocolError as exc:
            outcomes.append((exc.reason, exc.offset, exc.stream_offset))
        else:
            outcomes.append(out)
    if isinstance(outcomes[0], list):
        assert outcomes[1] == [(msgid, as_text(op)) for msgid, op in outcomes[0]]
    else:
        assert outcomes[1] == outcomes[0]


# --- real slapd responses, recorded, against ldap3's own decoding ---------------------------


class Recorder:
    """A one-connection TCP proxy on 127.0.0.1 in front of ``port`` that keeps the bytes the
    server sent; ``received`` is complete once the client has closed its connection."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(30)
        try:
            with self.listener:
                client, _ = self.listener.accept()
        except OSError:  # nobody came: result() reports it
            return
        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=30)
        with client, upstream, selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while True:
                events = selector.select(timeout=30)
                if not events:
                    return
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        self.received += data
                    key.data.sendall(data)

    def result(self) -> bytes:
        self.thread.join(30)
        assert not self.thread.is_alive()
        return bytes(self.received)


def people_ldif(n: int = 45) -> str:
    """n users (multi-valued addresses, binary objectGUID, UTF-8 names, language options),
    an OU with only ``ou``, a large group and a referral object."""

    def line(name: str, value: str | bytes) -> str:
        raw = value.encode() if isinstance(value, str) else value
        if raw.isascii() and raw.decode().strip() == raw.decode() and raw.decode().isprintable():
            return f"{name}: {raw.decode()}\n"
        return f"{name}:: {base64.b64encode(raw).decode()}\n"

    names = ["Jürgen Müller", "李雷", "Ærøskøbing Ødegård", "Zoë O'Brien", "Ñandú"]
    out = [f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n"]
    out.append(f"dn: ou=Empty,{BASE_DN}\nobjectClass: organizationalUnit\nou: Empty\n\n")
    for i in range(n):
        cn = f"{names[i % len(names)]} {i}" if i % 3 == 0 else f"User {i}"
        text = line("dn", f"cn={cn},{PEOPLE}") + "objectClass: inetOrgPerson\nobjectClass: user\n"
        text += line("cn", cn) + f"sn: {i}\nuid: user{i:02d}\nmail: user{i:02d}@example.com\n"
        for k in range(i % 5):
            text += f"proxyAddresses: {'SMTP' if k == 0 else 'smtp'}:u{i}.{k}@example.com\n"
        if i % 2:
            text += line("objectGUID", GUID[:15] + bytes([i]))
        if i % 7 == 0:
            text += (
                line("description;lang-de", f"Benutzer Nummer {i} ä")
                + "description: "
                + "x" * (50 * i)
                + "\n"
            )
        out.append(text + "\n")
    members = "".join(f"member: cn=User {i},{PEOPLE}\n" for i in range(1, n) if i % 3)
    out.append(f"dn: cn=Everyone,{BASE_DN}\nobjectClass: groupOfNames\ncn: Everyone\n{members}\n")
    out.append(
        f"dn: ou=Remote,{BASE_DN}\nobjectClass: referral\nobjectClass: extensibleObject\n"
        f"ou: Remote\nref: ldap://x.example.com/ou=Remote,{BASE_DN}\n\n"
    )
    return "".join(out)


def ldap3_connection(url: str, server: SlapdServer) -> Connection:
    return Connection(
        Server(url, get_info=NONE),
        server.bind_dn,
        server.password,
        auto_bind=True,
        auto_referrals=False,
        auto_range=False,
        return_empty_attributes=False,
    )


# Each search: (base, scope, filter, attributes, page size or None, extra ldap3 arguments).
SEARCHES: list[tuple[str, str, str, list[str], int | None, dict[str, Any]]] = [
    (BASE_DN, SUBTREE, "(objectClass=*)", ["*", "+"], 7, {}),
    (
        BASE_DN,
        SUBTREE,
        "(objectClass=*)",
        ["mail", "proxyAddresses", "objectGUID", "description;lang-de"],
        7,
        {},
    ),
    (PEOPLE, SUBTREE, "(cn=*)", ["cn", "mail"], None, {"types_only": True}),
    (f"ou=Remote,{BASE_DN}", BASE, "(objectClass=*)", ["*"], None, {}),
    (f"ou=Nowhere,{BASE_DN}", SUBTREE, "(objectClass=*)", ["*"], 7, {}),
    (PEOPLE, SUBTREE, "(objectClass=*)", ["cn"], None, {"size_limit": 3}),
]
# The offline fixture: small, but with pages, a referral, binary and UTF-8 values.
FIXTURE_SEARCHES: list[tuple[str, str, str, list[str], int | None, dict[str, Any]]] = [
    (
        BASE_DN,
        SUBTREE,
        "(|(uid=user0*)(ou=*))",
        ["cn", "mail", "proxyAddresses", "objectGUID", "description;lang-de"],
        7,
        {},
    ),
    (f"ou=Remote,{BASE_DN}", BASE, "(objectClass=*)", ["*"], None, {}),
    (f"ou=Nowhere,{BASE_DN}", SUBTREE, "(objectClass=*)", ["*"], None, {}),
]


def as_ldap3_sees_it(response: dict[str, Any]) -> tuple[Any, ...]:
    """One ldap3 response dict (searchResEntry/Ref/Done) as a comparable tuple."""
    kind = response["type"]
    if kind == "searchResEntry":
        raw = {
            name.lower(): list(values or []) for name, values in response["raw_attributes"].items()
        }
        return ("entry", response["dn"], raw)
    if kind == "searchResRef":
        return ("reference", tuple(response["uri"]))
    if kind == "searchResDone":
        paging = (response.get("controls") or {}).get(PAGED_RESULTS_OID)
        cookie = None if paging is None else paging["value"]["cookie"]
        referrals = tuple(response["referrals"] or ())
        return ("done", response["result"], response["dn"], response["message"], referrals, cookie)
    return ("other", kind)


def as_we_see_it(op: SearchEntry | SearchReference | SearchDone | OtherMessage) -> tuple[Any, ...]:
    if isinstance(op, SearchEntry):
        return ("entry", op.dn, op.attributes)
    if isinstance(op, SearchReference):
        return ("reference", op.uris)
    if isinstance(op, SearchDone):
        return ("done", op.result_code, op.matched_dn, op.diagnostic, op.referrals, op.paged_cookie)
    return ("other", {BIND_RESPONSE: "bindResponse"}.get(op.tag, op.tag))


def record(
    server: SlapdServer, searches: list[tuple[str, str, str, list[str], int | None, dict[str, Any]]]
) -> tuple[bytes, list[tuple[Any, ...]]]:
    """Run ``searches`` through ldap3 behind a Recorder: the server's bytes, and what ldap3 made
    of them (bind response first, then each page's entries, references and result)."""
    recorder = Recorder(server.port)
    conn = ldap3_connection(f"ldap://127.0.0.1:{recorder.port}", server)
    seen: list[tuple[Any, ...]] = [("other", "bindResponse")]
    try:
        for base, scope, search_filter, attributes, page_size, extra in searches:
            cookie: bytes | None = None
            while True:
                conn.search(
                    base,
                    search_filter,
                    scope,
                    attributes=attributes,
                    paged_size=page_size,
                    paged_cookie=cookie,
                    **extra,
                )
                seen += [as_ldap3_sees_it(r) for r in conn.response or []]
                seen.append(as_ldap3_sees_it(conn.result))
                cookie = seen[-1][-1]
                if not cookie:
                    break
    finally:
        conn.unbind()
    return recorder.result(), seen


def ldap3_offline(data: bytes) -> list[tuple[int, tuple[Any, ...]]]:
    """ldap3's own decoders (the fast one and the pyasn1 one must agree) run on recorded bytes."""
    strategy = Connection(Server("ldap://127.0.0.1:9", get_info=NONE)).strategy
    out = []
    while data:
        size = BaseStrategy.compute_ldap_message_size(data)
        fast = decode_message_fast(data[:size])
        fast_view = as_ldap3_sees_it(strategy.decode_response_fast(fast))
        slow, _ = decoder.decode(data[:size], asn1Spec=LDAP_MESSAGE_TEMPLATE)
        assert as_ldap3_sees_it(strategy.decode_response(slow)) == fast_view
        out.append((fast["messageID"], fast_view))
        data = data[size:]
    return out


def check_recording(
    data: bytes, expected: list[tuple[Any, ...]] | None = None
) -> list[tuple[Any, ...]]:
    """Decode ``data`` in several chunkings; it must equal ldap3's offline decoding (and
    ``expected``, what ldap3 returned live, if given)."""
    offline = ldap3_offline(data)
    ours = decode_all(data)
    assert [(i, as_we_see_it(op)) for i, op in ours] == offline
    if expected is not None:
        assert [view for _, view in offline] == expected
    rng = random.Random(len(data))
    for sizes in ([1], [rng.randint(1, 9000) for _ in range(9)], [65536]):
        assert decode_all(data, chunks=sizes) == ours
    return [view for _, view in offline]


@pytest.fixture(scope="module")
def people_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    server = SlapdServer(tmp_path_factory.mktemp("ldapwire"))
    server.load_ldif(people_ldif())
    with server:
        yield server


@pytest.mark.slapd
def test_recorded_slapd_responses_decode_as_ldap3_decodes_them(people_slapd: SlapdServer) -> None:
    data, seen = record(people_slapd, SEARCHES)
    views = check_recording(data, seen)
    kinds = [view[0] for view in views]
    entries = [view for view in views if view[0] == "entry"]
    dones = [view for view in views if view[0] == "done"]
    # What the recording had to contain to be worth comparing:
    assert kinds.count("entry") > 100 and kinds.count("reference") >= 2
    assert any(view[2].get("objectguid") for view in entries)
    assert any(not view[2] for view in entries)  # an entry without any of the requested attributes
    assert any("description;lang-de" in view[2] for view in entries)
    assert any(not view.isascii() for view in (e[1] for e in entries))
    assert any(values == [] for e in entries for values in e[2].values())  # typesOnly
    assert {d[1] for d in dones} == {0, 4, 10, 32}
    assert (
        any(d[5] for d in dones)
        and any(d[5] == b"" for d in dones)
        and any(d[5] is None for d in dones)
    )
    assert any(d[4] for d in dones)  # referrals in a searchResDone
    assert b"\x30\x82" in data  # long-form lengths


def test_recorded_fixture_decodes_as_ldap3_decodes_it() -> None:
    data = FIXTURE.read_bytes()
    views = check_recording(data)
    dones = [view for view in views if view[0] == "done"]
    assert (
        len(dones) >= 4
        and dones[0][5]
        and dones[-3][5] == b""
        and {d[1] for d in dones} == {0, 10, 32}
    )
    assert any(view[0] == "reference" for view in views)
    entries = [view for view in views if view[0] == "entry"]
    assert any(view[2].get("objectguid") == [GUID[:15] + bytes([1])] for view in entries)
    assert any("Jürgen Müller 0" in view[1] for view in entries)


def write_fixture() -> None:
    """Record FIXTURE again from a private slapd (run this file as a script)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = SlapdServer(Path(tmp))
        server.load_ldif(people_ldif())
        with server:
            data, seen = record(server, FIXTURE_SEARCHES)
    check_recording(data, seen)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_bytes(data)
    print(f"wrote {FIXTURE} ({len(data)} bytes, {len(seen)} messages)")


if __name__ == "__main__":
    write_fixture()


# --- framing requests ---------------------------------------------------------------------------


def _ldap3_message(
    message_id: int, search_filter: str, attributes: list[str], cookie: bytes
) -> Any:
    from ldap3 import DEREF_NEVER
    from ldap3.operation.search import search_operation
    from ldap3.protocol.convert import build_controls_list
    from ldap3.protocol.rfc2696 import paged_search_control
    from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp

    request = search_operation(
        BASE_DN, search_filter, SUBTREE, DEREF_NEVER, attributes, 0, 0, False, False, None, None,
        validator=None, check_names=False,
    )  # fmt: skip
    operation = ProtocolOp().setComponentByName("searchRequest", request)
    control = paged_search_control(True, 500, cookie)
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = operation
    message["controls"] = build_controls_list([control])
    return message, operation, control


@settings(max_examples=200, deadline=None)
@given(
    message_id=st.one_of(st.integers(0, 300), st.integers(0, 2**31 - 1)),
    cookie=st.binary(max_size=300),
    names=st.lists(st.from_regex(r"[a-z][a-z0-9]{0,30}", fullmatch=True), max_size=40),
    value=st.text(alphabet="abcdefghij*", min_size=0, max_size=200).map(
        lambda v: v.replace("**", "*")
    ),
)
def test_framed_requests_are_what_ldap3_itself_would_send(
    message_id: int, cookie: bytes, names: list[str], value: str
) -> None:
    from ldap3.utils.asn1 import encode

    search_filter = f"(&(objectClass=inetOrgPerson)(mail={value or '*'}))"
    message, operation, control = _ldap3_message(message_id, search_filter, names, cookie)
    framed = frame_message(message_id, encode(operation), (encode(control),))
    assert framed == encode(message)


def test_a_message_id_outside_ldaps_range_is_refused() -> None:
    with pytest.raises(ValueError, match="message ID"):
        frame_message(2**31, b"")
    with pytest.raises(ValueError, match="message ID"):
        frame_message(-1, b"")


_IDS = [1, 127, 128, 255, 256, 2**15 - 1, 2**15, 2**23, 2**24 - 1, 2**24, 2**31 - 1]
_COOKIES = [0, 127, 128, 255, 256, 2**16 - 1, 2**16]


@pytest.mark.parametrize(
    ("message_id", "cookie_size"),
    [*((i, c) for i in _IDS for c in _COOKIES), (1, 2**24), (2**31 - 1, 2**24)],
)
def test_framing_at_the_edges_of_ber_integers_and_lengths(
    message_id: int, cookie_size: int
) -> None:
    # An ID one past a byte's range takes a leading zero octet (INTEGER is signed); cookies of
    # 2**16 and 2**24 bytes push the control, the controls and the message to 3- and 4-octet
    # lengths.
    from ldap3.utils.asn1 import encode

    cookie = (bytes(range(256)) * (cookie_size // 256 + 1))[:cookie_size]
    message, operation, control = _ldap3_message(message_id, "(mail=*)", ["mail"], cookie)
    framed = frame_message(message_id, encode(operation), (encode(control),))
    assert framed == encode(message)


# --- framing first, decoding later (a paged search decodes a page after asking for the next) ---


def framed_then_decoded(data: bytes, sizes: list[int]) -> Any:
    """``data`` fed in ``sizes`` pieces to frames(), every frame decoded once all are framed:
    messages and bytes left, or the (first) error."""
    reader = MessageReader(max_message_size=4096)
    frames = []
    try:
        for piece in pieces(data, sizes):
            frames += reader.frames(piece)
        return [reader.decode(frame) for frame in frames], reader.buffered
    except ProtocolError:
        return ProtocolError


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(valid_messages(), min_size=1, max_size=5), sizes=CHUNKS)
def test_frames_decoded_later_are_the_messages_fed_and_their_tags_are_the_operations(
    messages: list[tuple[bytes, Message]], sizes: list[int]
) -> None:
    data = b"".join(encoded for encoded, _ in messages)
    reader = MessageReader()
    frames = reader.frames(data)
    assert [frame.message for frame in frames] == [encoded for encoded, _ in messages]
    kinds = {SearchEntry: 0x64, SearchDone: 0x65, SearchReference: 0x73}
    for frame, (_, (_, op)) in zip(frames, messages, strict=True):
        assert frame.tag == (op.tag if isinstance(op, OtherMessage) else kinds[type(op)])
    assert framed_then_decoded(data, sizes) == ([expected for _, expected in messages], 0)


@settings(max_examples=500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mutated(), ANY_BYTES), sizes=CHUNKS)
def test_frames_decoded_later_fail_when_feeding_fails(data: bytes, sizes: list[int]) -> None:
    fed = chunked_or_error(data, sizes)
    later = framed_then_decoded(data, sizes)
    if isinstance(fed, ProtocolError):
        assert later is ProtocolError  # (maybe another one: framing runs ahead of decoding)
    else:
        assert later == fed
