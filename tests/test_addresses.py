"""Address validation (email-validator, with a fast path for the usual shape) and the conflicts
and skipped values a plan reports with the entries' DNs."""

from __future__ import annotations

from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from gitrepo import User, invoke, make_repo, users
from hypothesis import given
from hypothesis import strategies as st

from reconciler.addresses import (
    invalid_reason,
    is_plain,
    normalize,
    plain_domains,
    usual_address,
)
from reconciler.directory import Entry
from reconciler.mapping import INVALID, InvalidValue, map_entries
from reconciler.spec import DomainSpec, build_spec


def ad_spec() -> DomainSpec:
    merged = {"domain": "example.com", "directory": {"flavor": "active_directory", "ldif": "x"}}
    return build_spec(merged, Path("x.yaml"), Path())


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("Alice.Smith@Example.COM", "alice.smith@example.com"),
        ("  bob@example.com ", "bob@example.com"),
        ("o'brien+news@example.com", "o'brien+news@example.com"),
        ("anna@BÜCHER.example", "anna@xn--bcher-kva.example"),
        ("jörg@münchen.example", "jörg@xn--mnchen-3ya.example"),  # SMTPUTF8 local part
        ("alice@example.com.", "alice@example.com"),  # the DNS root dot
        ("mail@corp.local", "mail@corp.local"),  # an internal domain is a customer's domain
    ],
)
def test_addresses_are_stored_in_one_form(written: str, stored: str) -> None:
    assert normalize(written) == stored


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("a..b@example.com", "two periods in a row"),
        ("al ice@example.com", "invalid characters before the @-sign: SPACE"),
        ("@example.com", "something before the @-sign"),
        ("alice@", "something after the @-sign"),
        ("no-at-sign.example.com", "must have an @-sign"),
        ("alice@example", "no dot"),
        ('"quoted"@example.com', "Quoting"),
        ("x" * 250 + "@example.com", "too long"),
    ],
)
def test_invalid_addresses_say_why(written: str, reason: str) -> None:
    assert normalize(written) is None
    assert reason in invalid_reason(written)


def test_a_binary_value_is_no_address() -> None:
    assert normalize(b"alice@example.com") is None
    assert invalid_reason(b"\xff") == "a binary value"


_ATEXT = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-"
_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=12)
_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(
    local=st.lists(_atoms, min_size=1, max_size=4).map(".".join),
    labels=st.lists(_labels, min_size=1, max_size=3),
    tld=st.from_regex(r"[a-z][a-z0-9]{1,5}", fullmatch=True),
)
def test_the_fast_path_agrees_with_email_validator(local: str, labels: list[str], tld: str) -> None:
    address = f"{local}@{'.'.join([*labels, tld])}"
    fast = normalize(address) if is_plain(address) else None
    try:
        checked = validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError:
        assert fast is None, f"the fast path accepted {address!r}, the library does not"
        return
    if fast is not None:
        assert fast == f"{checked.local_part.lower()}@{checked.ascii_domain}"


def test_skipped_values_name_the_entry_and_the_attribute() -> None:
    entry = Entry(
        "CN=Alice,OU=Staff,DC=example,DC=com",
        {
            "mail": ["alice@example.com", "alice@@example.com"],
            "proxyaddresses": ["smtp:al ice@example.com", "X500:/o=x", "smtp:ok@example.com"],
        },
    )
    result = map_entries([entry], ad_spec())
    assert set(result.recipients) == {"alice@example.com", "ok@example.com"}
    assert result.dropped[INVALID] == 2
    assert [(v.dn, v.attribute, v.value) for v in result.invalid] == [
        ("CN=Alice,OU=Staff,DC=example,DC=com", "mail", "alice@@example.com"),
        ("CN=Alice,OU=Staff,DC=example,DC=com", "proxyAddresses", "al ice@example.com"),
    ]
    assert "invalid characters" in result.invalid[1].reason
    assert InvalidValue("cn=x", "mail", "a b", "why").describe() == "cn=x: mail 'a b' skipped: why"


# --- through the command line: skipped values are notes, conflicts refuse -----------------------


def test_plan_reports_invalid_values_and_still_plans(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, [*users(2), User("bad", aliases=("b a d",))])
    result = invoke("plan", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    assert (
        "  note: skipped: CN=bad,OU=Staff,DC=example,DC=com: proxyAddresses "
        "'b a d@example.com' skipped: The email address contains invalid characters before "
        "the @-sign: SPACE."
    ) in result.stdout.splitlines()
    assert "+ bad@example.com  mailbox" in result.stdout


@pytest.mark.parametrize(
    ("directory", "address", "dns"),
    [
        pytest.param(
            [User("alice", mail="Alice@Example.com"), User("alice2", mail="ALICE@example.COM")],
            "alice@example.com",
            ["CN=alice,OU=Staff,DC=example,DC=com", "CN=alice2,OU=Staff,DC=example,DC=com"],
            id="same-address-in-other-case",
        ),
        pytest.param(
            [User("alice"), User("bob", aliases=("ALICE",))],
            "alice@example.com",
            ["CN=alice,OU=Staff,DC=example,DC=com", "CN=bob,OU=Staff,DC=example,DC=com"],
            id="alias-equal-to-another-mailbox",
        ),
    ],
)
def test_conflicts_refuse_plan_and_apply_naming_every_entry(
    tmp_path: Path, directory: list[User], address: str, dns: list[str]
) -> None:
    repo = make_repo(tmp_path, directory)
    conflict = f"conflict: {address} is claimed by 2 entries: {'; '.join(dns)}"
    plan = invoke("plan", "--repo", str(repo))
    assert plan.exit_code == 4
    assert f"  REFUSED: {conflict}" in plan.stdout.splitlines()
    applied = invoke("apply", "--repo", str(repo))
    assert applied.exit_code == 4
    assert f"  {conflict}" in applied.stderr.splitlines()
    assert not (repo / "state").exists()


@pytest.mark.parametrize(
    ("written", "stored", "plain"),
    [
        # (plain: taken by the fast path; the stored form is the same either way)
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com", True),
        # The library enforces RFC 5321's 64 octets only in its strict mode.
        ("a" * 65 + "@example.com", "a" * 65 + "@example.com", False),
        ("a@" + "b" * 59 + ".com", "a@" + "b" * 59 + ".com", True),  # a 63-character domain
        ("a@" + "b" * 60 + ".com", "a@" + "b" * 60 + ".com", False),  # 64: the library's
        ("a@" + "b" * 64 + ".com", None, False),  # a label of 64 characters
        ("Alice.Smith@Example.COM", "alice.smith@example.com", True),
        ("a@example.c0m", "a@example.c0m", True),
        ("a@example.123", "a@example.123", False),  # a last label of digits: the library's
        ("a@EXAMPLE.COM.", "a@example.com", False),
        ("a@example.com..", None, False),
        ("a@xn--bcher-kva.example", "a@xn--bcher-kva.example", False),
        ("a@BÜCHER.example", "a@xn--bcher-kva.example", False),
        ("a@b@example.com", None, False),  # '@' in the local part: rpartition's local part
        ('"a@b"@example.com', None, False),
        ('"a b"@example.com', None, False),
        ("a.@example.com", None, False),
        ("a@-example.com", None, False),
        ("a@example-.com", None, False),
        ("a@[127.0.0.1]", None, False),
        ("no-at-sign", None, False),
    ],
)
def test_the_edges_of_the_fast_path(written: str, stored: str | None, plain: bool) -> None:
    assert is_plain(written.strip().lower()) is plain
    assert normalize(written) == stored
    if stored is None:
        assert invalid_reason(written)


def test_the_domain_cache_stays_bounded_and_answers_the_same_after_eviction() -> None:
    from reconciler.addresses import _plain_domain

    assert normalize("first@example.com") == "first@example.com"
    maxsize = _plain_domain.cache_info().maxsize
    assert maxsize is not None
    for n in range(maxsize + 10):  # more domains than the cache keeps: example.com is evicted
        assert normalize(f"a@d{n}.example") == f"a@d{n}.example"
    assert _plain_domain.cache_info().currsize <= maxsize
    assert normalize("Again@Example.com") == "again@example.com"
    assert normalize("again@example.123") == "again@example.123"


def test_values_that_cannot_be_plain_addresses_never_reach_the_domain_cache() -> None:
    from reconciler.addresses import _plain_domain

    before = _plain_domain.cache_info().currsize
    for value in ("no-at-sign-" * 40, "x@" + "a" * 64 + ".com", "l" * 65 + "@example.com"):
        assert not is_plain(value)
    assert _plain_domain.cache_info().currsize == before


_MANAGED = ["example.com", "example.net", "xn--bcher-kva.example", "a" * 64 + ".example", "x"]


@given(
    local=st.text(st.sampled_from("aZ09é.+ _-"), max_size=66),
    domain=st.sampled_from([*_MANAGED, "Example.COM", "example.com ", "other.test"]),
)
def test_the_usual_address_shape_is_normalized_as_normalize_does_it(
    local: str, domain: str
) -> None:
    usual_domains = plain_domains(_MANAGED)
    assert usual_domains == {"example.com", "example.net"}  # (the others are not plain)
    value = f"{local}@{domain}"
    usual = usual_address(value, usual_domains)
    assert usual is None or usual == normalize(value)
    short_way = local.isascii() and local.isalnum() and len(local) <= 64
    if short_way and domain.lower() in usual_domains:
        assert usual == value.lower()
