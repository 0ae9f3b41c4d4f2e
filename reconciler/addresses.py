"""Addresses as the directory writes them → the stored form, or why a value is not one.

Validation is email-validator's (syntax only: no DNS; IDN domains to their ASCII form). It costs
about 0.1 ms an address, too much for every address of a 100k-user directory, so the usual shape
(an ASCII dot-atom local part at an ASCII host name) is recognised first, by a regular expression
for the local part and one for the domain, matched once per domain; that shape is a strict subset
of what email-validator accepts, with the same result (a test checks this), and everything else
goes through the library, imported only then.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from collections.abc import Iterable

from reconciler.directory import Entry, Value

# RFC 5322 atext runs joined by single dots, at most 64 characters; a domain of at most 63
# characters (so no label is longer) of letters, digits and inner single hyphens, whose last
# label starts with a letter. Anything else (longer, quoted, IDN, …) goes to the library.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_PLAIN_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_PLAIN_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?=[a-z]){_LABEL}")


def normalize(value: Value) -> str | None:
    """The stored form of an address (trimmed, lower case, ASCII domain), or None."""
    if type(value) is not str:
        return None
    address = value.strip().lower()
    if is_plain(address):
        return address
    return _validated(address)[0]


def is_plain(address: str) -> bool:
    """Whether a lower-cased address has the usual shape that needs no library to validate."""
    local, at, domain = address.rpartition("@")
    # Lengths first: only host names of a plausible size reach (and stay in) the domain cache.
    return (
        bool(at)
        and 0 < len(local) <= 64
        and len(domain) <= 63
        and _plain_domain(domain)
        # Letters and digits only, the usual local part, need no regex (nor does its match
        # cost more than all the rest): isalnum() alone would take non-ASCII letters.
        and ((local.isalnum() and local.isascii()) or _PLAIN_LOCAL.fullmatch(local) is not None)
    )


def plain_domains(domains: Iterable[str]) -> frozenset[str]:
    """Those of ``domains`` (lower case) at which an ASCII letters-and-digits local part makes
    an address valid as it is: the domains :func:`usual_address` takes."""
    return frozenset(d for d in domains if is_plain("a@" + d))


def usual_address(value: Value, domains: frozenset[str]) -> str | None:
    """``value`` lower-cased when it has the usual shape, ASCII letters and digits at one of
    ``domains`` (from :func:`plain_domains`): what normalize() gives it, for less (it runs for
    every address of a directory); else None."""
    if type(value) is not str:
        return None
    address = value.lower()
    local, _, domain = address.rpartition("@")
    usual = domain in domains and local.isalnum() and local.isascii() and len(local) <= 64
    return address if usual else None


@functools.lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> bool:
    # A directory has a handful of domains for hundreds of thousands of addresses: each
    # domain is matched once, and each address's local part only.
    return _PLAIN_DOMAIN.fullmatch(domain) is not None  # (is_plain checked its length)


def invalid_reason(value: Value) -> str:
    """Why ``value`` is not an address (for values :func:`normalize` refused)."""
    if not isinstance(value, str):
        return "a binary value"
    return _validated(value.strip().lower())[1] or "not an address"


def _validated(address: str) -> tuple[str | None, str | None]:
    from email_validator import EmailNotValidError, validate_email

    # A final dot is the DNS root, as in a zone file: the same domain.
    if address.endswith(".") and not address.endswith(".."):
        address = address[:-1]
    try:
        # globally_deliverable=False: an internal domain (corp.local) is a real customer's
        # domain; whether the domain is managed at all is decided by the spec, afterwards.
        result = validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        return None, str(exc)
    local = result.local_part.lower()
    domain = result.ascii_domain.lower()
    if "." not in domain:
        return None, "the domain part has no dot"
    return f"{local}@{domain}", None


def mail_values(values: Iterable[Value]) -> list[str]:
    """Addresses in a multi-valued attribute: plain values and smtp:-prefixed ones.

    "SMTP:" marks the primary address, "smtp:" a secondary one; X500:, SIP:, X400: … are
    other kinds of address and are skipped."""
    found = []
    for value in values:
        if type(value) is not str:
            continue
        head = value[:5]
        if head == "smtp:" or head == "SMTP:":  # nearly every value of proxyAddresses
            found.append(value[5:])
            continue
        colon = value.find(":")
        if colon < 0:
            found.append(value)
        elif colon == 4 and value[:4].lower() == "smtp":
            found.append(value[5:])
        elif not _is_prefix(value[:colon]):
            found.append(value)  # a colon, but not after an address type: keep it as written
    return found


def _is_prefix(text: str) -> bool:
    return text.isascii() and text.isalnum() and text[0].isalpha()


def primary_values(values: Iterable[Value]) -> Iterable[str]:
    """The "SMTP:" (upper case: primary) values of a proxyAddresses-like attribute."""
    for value in values:
        if isinstance(value, str) and value.startswith("SMTP:"):
            yield value[5:]


def identity(entry: Entry, attribute: str | None) -> str | None:
    """The entry's stable id as text: AD objectGUID in its usual form, other binaries base64."""
    if attribute is None:
        return None
    value = entry.first(attribute)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if attribute.lower() == "objectguid" and len(value) == 16:
        return str(uuid.UUID(bytes_le=value))
    return "base64:" + base64.b64encode(value).decode("ascii")


def text(value: Value | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
