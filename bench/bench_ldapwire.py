"""Micro-benchmark: reconciler.ldapwire.MessageReader against ldap3's own response decoder.

Encodes N search entries like a paged search of ``uid=user0000001,ou=People,dc=example,dc=com``
returns them (mail, 4 proxyAddresses, displayName, entryUUID; a searchResDone with a paging
cookie every 1000 entries), then times MessageReader.feed over 64 KiB chunks. The best of
several runs counts: on a shared machine the others mostly measure the neighbours.

    python bench/bench_ldapwire.py              # 100k entries, best of 5
    python bench/bench_ldapwire.py --keep       # keep every entry, as a caller would (more GC work)
    python bench/bench_ldapwire.py --keep --no-gc   # ... with the cyclic GC off meanwhile
    python bench/bench_ldapwire.py --ad         # 4-octet lengths everywhere, as Active Directory
    python bench/bench_ldapwire.py --ldap3      # also time ldap3's decoder (slow) on the same bytes
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.ldapwire import MessageReader, SearchEntry

CHUNK = 64 * 1024
PAGE = 1000


AD_LENGTHS = False  # --ad: constructed elements get 4-octet lengths


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if AD_LENGTHS and tag in (0x30, 0x31, 0x64, 0x65, 0xA0):
        return bytes((tag, 0x84)) + n.to_bytes(4, "big") + content
    if n < 0x80:
        return bytes((tag, n)) + content
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content


def message(msgid: int, op: bytes, controls: bytes = b"") -> bytes:
    body = tlv(0x02, msgid.to_bytes(4, "big", signed=True).lstrip(b"\0") or b"\0") + op
    return tlv(0x30, body + (tlv(0xA0, controls) if controls else b""))


def entry(msgid: int, i: int) -> bytes:
    uid = f"user{i:07d}"
    attributes = {
        "mail": [f"{uid}@example.com"],
        "proxyAddresses": [
            f"SMTP:{uid}@example.com",
            f"smtp:u{i}@example.com",
            f"smtp:{uid}@example.net",
            f"X500:/o=Example/ou=Exchange/cn=Recipients/cn={uid}",
        ],
        "displayName": [f"User Number {i}"],
        "entryUUID": [str(uuid.UUID(int=i))],
    }
    encoded = b"".join(
        tlv(0x30, tlv(0x04, name.encode()) + tlv(0x31, b"".join(tlv(0x04, v.encode()) for v in vs)))
        for name, vs in attributes.items()
    )
    dn = f"uid={uid},ou=People,dc=example,dc=com".encode()
    return message(msgid, tlv(0x64, tlv(0x04, dn) + tlv(0x30, encoded)))


def done(msgid: int, cookie: bytes) -> bytes:
    value = tlv(0x30, tlv(0x02, b"\0") + tlv(0x04, cookie))
    control = tlv(0x30, tlv(0x04, b"1.2.840.113556.1.4.319") + tlv(0x04, value))
    return message(msgid, tlv(0x65, b"\x0a\x01\x00\x04\x00\x04\x00"), control)


def stream(n: int) -> bytes:
    parts = []
    for i in range(n):
        msgid = 2 + i // PAGE
        parts.append(entry(msgid, i))
        if (i + 1) % PAGE == 0 or i + 1 == n:
            parts.append(done(msgid, b"" if i + 1 == n else (i + 1).to_bytes(8, "big")))
    return b"".join(parts)


def time_reader(data: bytes, n: int, keep: bool, collect: bool) -> float:
    chunks = [data[offset : offset + CHUNK] for offset in range(0, len(data), CHUNK)]
    kept: list[object] = []
    gc.collect()
    if not collect:
        gc.disable()
    start = time.perf_counter()
    reader = MessageReader()
    count = 0
    for chunk in chunks:
        messages = reader.feed(chunk)
        count += sum(type(op) is SearchEntry for _, op in messages)
        if keep:
            kept += messages
    elapsed = time.perf_counter() - start
    gc.enable()
    assert count == n and reader.buffered == 0, (count, reader.buffered)
    return elapsed


def time_ldap3(data: bytes, n: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ldap3 import Connection, Server
        from ldap3.strategy.base import BaseStrategy
        from ldap3.utils.asn1 import decode_message_fast
    strategy = Connection(Server("ldap://127.0.0.1:9")).strategy
    start = time.perf_counter()
    offset = count = 0
    while offset < len(data):
        size = BaseStrategy.compute_ldap_message_size(data[offset : offset + 10])
        decoded = strategy.decode_response_fast(decode_message_fast(data[offset : offset + size]))
        count += decoded["type"] == "searchResEntry"
        offset += size
    elapsed = time.perf_counter() - start
    assert count == n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="entries (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    parser.add_argument("--keep", action="store_true", help="keep the decoded entries")
    parser.add_argument("--no-gc", action="store_true", help="cyclic GC off while decoding")
    parser.add_argument("--ad", action="store_true", help="4-octet lengths, as AD sends them")
    parser.add_argument("--ldap3", action="store_true", help="also time ldap3's fast decoder")
    args = parser.parse_args()
    global AD_LENGTHS
    AD_LENGTHS = args.ad
    data = stream(args.n)
    print(f"{args.n} entries, {len(data) / 2**20:.1f} MiB, fed in {CHUNK // 1024} KiB chunks")
    best = min(time_reader(data, args.n, args.keep, not args.no_gc) for _ in range(args.repeat))
    print(f"MessageReader: {best:.3f} s  ({args.n / best:,.0f} entries/s)")
    if args.ldap3:
        slow = time_ldap3(data, args.n)
        print(f"ldap3 decode_response_fast: {slow:.3f} s  ({args.n / slow:,.0f} entries/s)")


if __name__ == "__main__":
    main()
