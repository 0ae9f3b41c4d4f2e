"""map_entries: directory entries + a domain spec → the desired recipients, and what was left out.

Entries are built by hand (attribute names lower-cased, as every source delivers them); specs go
through build_spec from small literal mappings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.directory import Entry, Value
from reconciler.mapping import (
    EXCLUDED,
    FOREIGN_DOMAIN,
    INVALID,
    NO_ADDRESS,
    Conflict,
    MappingResult,
    map_entries,
)
from reconciler.recipient import Recipient
from reconciler.spec import DomainSpec, build_spec

GUID_BYTES = bytes.fromhex("9d546f9c723b359b275d748825ee4a37")
GUID_TEXT = "9c6f549d-3b72-9b35-275d-748825ee4a37"  # AD's byte order: first 3 groups little-endian


def spec(**keys: Any) -> DomainSpec:
    """An active_directory spec for example.com; ``keys`` are top-level spec keys."""
    merged = {
        "domain": "example.com",
        "directory": {"flavor": "active_directory", "ldif": "x.ldif"},
        **keys,
    }
    return build_spec(merged, Path("x.yaml"), Path())


AD = spec()


def entry(dn: str, **attributes: Sequence[Value]) -> Entry:
    return Entry(dn, {name.lower(): list(values) for name, values in attributes.items()})


def alice(**attributes: Sequence[Value]) -> Entry:
    """Alice with a mail, a name and an id; ``attributes`` add to or replace those."""
    base: dict[str, Sequence[Value]] = {
        "mail": ["alice@example.com"],
        "displayName": ["Alice Smith"],
        "objectGUID": [GUID_BYTES],
    }
    return entry("CN=Alice Smith,OU=Staff,DC=example,DC=com", **{**base, **attributes})


def mailbox(name: str | None, id: str) -> Recipient:
    return Recipient(kind="mailbox", name=name, id=id, status="active")


def alias(target: str) -> Recipient:
    return Recipient(kind="alias", target=target)


def mapped(*entries: Entry, domain_spec: DomainSpec = AD) -> MappingResult:
    return map_entries(entries, domain_spec)


def dropped(result: MappingResult) -> Mapping[str, int]:
    return dict(result.dropped)


# --- mailboxes ----------------------------------------------------------------------------------


def test_the_mail_attribute_gives_a_mailbox_with_name_and_id() -> None:
    result = mapped(alice())
    assert result.recipients == {"alice@example.com": mailbox("Alice Smith", GUID_TEXT)}
    assert result.owners == {"alice@example.com": "CN=Alice Smith,OU=Staff,DC=example,DC=com"}
    assert result.entries_read == 1
    assert dropped(result) == {}
    assert result.entries_without_id == 0
    assert result.conflict_list() == ()


def test_addresses_are_stored_lower_case_and_trimmed() -> None:
    result = mapped(
        alice(mail=["  Alice.Smith@EXAMPLE.com "], proxyAddresses=["smtp:AS@Example.COM"])
    )
    assert result.recipients == {
        "alice.smith@example.com": mailbox("Alice Smith", GUID_TEXT),
        "as@example.com": alias("alice.smith@example.com"),
    }


def test_further_mail_values_are_aliases_of_the_first() -> None:
    result = mapped(alice(mail=["alice@example.com", "a.smith@example.com"]))
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "a.smith@example.com": alias("alice@example.com"),
    }


def test_the_name_attribute_of_the_spec_is_used_and_may_be_absent() -> None:
    cn_spec = spec(users={"name_attribute": "cn"})
    result = mapped(alice(cn=["asmith"]), domain_spec=cn_spec)
    assert result.recipients["alice@example.com"].name == "asmith"
    result = mapped(alice(displayName=[]))
    assert result.recipients["alice@example.com"] == mailbox(None, GUID_TEXT)


def test_a_name_given_as_bytes_is_decoded_as_utf8() -> None:
    result = mapped(alice(displayName=["Zoë".encode()]))
    assert result.recipients["alice@example.com"].name == "Zoë"


# --- proxyAddresses -----------------------------------------------------------------------------


def test_proxy_addresses_smtp_prefixes_make_aliases_and_other_prefixes_are_ignored() -> None:
    result = mapped(
        alice(
            proxyAddresses=[
                "SMTP:alice@example.com",
                "smtp:a.smith@example.com",
                "Smtp:asmith@example.com",
                "X500:/o=ExchangeLabs/ou=Exchange Administrative Group/cn=Recipients/cn=alice",
                "SIP:alice@example.com.sip",
                "sip:alice.sip@example.com",
                "x400:c=US;a= ;p=Example;o=Exchange;s=Smith;g=Alice;",
                "EUM:1234;phone-context=example.com",
            ]
        )
    )
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "a.smith@example.com": alias("alice@example.com"),
        "asmith@example.com": alias("alice@example.com"),
    }
    assert dropped(result) == {}


def test_without_a_mail_attribute_the_smtp_primary_is_the_mailbox() -> None:
    result = mapped(
        alice(
            mail=[],
            proxyAddresses=[
                "smtp:second@example.com",
                "X500:/o=Example/cn=alice",
                "SMTP:Primary@Example.com",
            ],
        )
    )
    assert result.recipients == {
        "primary@example.com": mailbox("Alice Smith", GUID_TEXT),
        "second@example.com": alias("primary@example.com"),
    }


def test_a_lower_case_smtp_value_alone_does_not_make_a_mailbox() -> None:
    result = mapped(alice(mail=[], proxyAddresses=["smtp:secondary@example.com"]))
    assert result.recipients == {}
    assert dropped(result) == {NO_ADDRESS: 1}


def test_the_mail_attribute_wins_over_the_smtp_primary() -> None:
    result = mapped(alice(proxyAddresses=["SMTP:other@example.com"]))
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "other@example.com": alias("alice@example.com"),
    }


def test_unprefixed_values_of_an_alias_attribute_are_addresses() -> None:
    openldap = spec(directory={"flavor": "openldap", "ldif": "x.ldif"})
    carol = entry(
        "uid=carol,ou=People,dc=example,dc=com",
        mail=["carol@example.com"],
        cn=["Carol White"],
        entryUUID=["3f0a1b2c-0000-4000-8000-000000000001"],
        mailAlternateAddress=["c.white@example.com", "CW@example.com"],
    )
    result = mapped(carol, domain_spec=openldap)
    assert result.recipients == {
        "carol@example.com": mailbox("Carol White", "3f0a1b2c-0000-4000-8000-000000000001"),
        "c.white@example.com": alias("carol@example.com"),
        "cw@example.com": alias("carol@example.com"),
    }


# --- which addresses belong to the domain -------------------------------------------------------


def test_addresses_in_foreign_domains_are_dropped_and_counted() -> None:
    result = mapped(
        alice(
            proxyAddresses=[
                "smtp:alice@partner.example.org",
                "smtp:alice@example.net",
                "smtp:alice@sub.example.com",
                "smtp:alice@example.com.evil.test",
            ]
        )
    )
    assert result.recipients == {"alice@example.com": mailbox("Alice Smith", GUID_TEXT)}
    assert dropped(result) == {FOREIGN_DOMAIN: 4}


def test_a_foreign_primary_makes_no_mailbox() -> None:
    result = mapped(alice(mail=["alice@partner.example.org"]))
    assert result.recipients == {}
    assert dropped(result) == {FOREIGN_DOMAIN: 1}


def test_addresses_in_domain_aliases_are_managed_too() -> None:
    with_aliases = spec(domain_aliases=["example.net", "Example.ORG."])
    result = mapped(
        alice(
            proxyAddresses=[
                "smtp:alice@example.net",
                "smtp:alice@example.org",
                "smtp:alice@example.info",
            ]
        ),
        domain_spec=with_aliases,
    )
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "alice@example.net": alias("alice@example.com"),
        "alice@example.org": alias("alice@example.com"),
    }
    assert dropped(result) == {FOREIGN_DOMAIN: 1}


def test_an_internationalized_domain_is_compared_in_its_ascii_form() -> None:
    idn = spec(domain="bücher.example")
    result = mapped(
        alice(mail=["anna@BÜCHER.example"], proxyAddresses=["smtp:anna@xn--bcher-kva.example"]),
        domain_spec=idn,
    )
    assert result.recipients == {"anna@xn--bcher-kva.example": mailbox("Alice Smith", GUID_TEXT)}


# --- exclude globs ------------------------------------------------------------------------------


def test_exclude_globs_star_question_mark_and_sequences_case_insensitive() -> None:
    excluding = spec(
        domain_aliases=["example.net"],
        exclude=["test-*@*", "forgetme?@example.com", "scan[0-9]@example.com", "ops[!a-m]@*"],
    )
    addresses = [
        "test-printer@example.com",  # test-*@*
        "TEST-Phone@Example.NET",  # test-*@* whatever the case
        "forgetme1@example.com",  # forgetme?@
        "forgetme12@example.com",  # ? is one character: kept
        "scan7@example.com",  # [0-9]
        "scanx@example.com",  # not a digit: kept
        "opsz@example.com",  # [!a-m]
        "opsb@example.com",  # b is in a-m: kept
    ]
    result = mapped(
        *[entry(f"CN={a},DC=example,DC=com", mail=[a]) for a in addresses], domain_spec=excluding
    )
    assert sorted(result.recipients) == [
        "forgetme12@example.com",
        "opsb@example.com",
        "scanx@example.com",
    ]
    assert dropped(result) == {EXCLUDED: 5}


def test_an_exclude_pattern_written_in_upper_case_still_matches() -> None:
    excluding = spec(exclude=["BadUser@*"])
    result = mapped(alice(mail=["baduser@example.com"]), domain_spec=excluding)
    assert result.recipients == {}
    assert dropped(result) == {EXCLUDED: 1}


def test_an_excluded_alias_is_dropped_while_its_mailbox_stays() -> None:
    excluding = spec(exclude=["old-*@example.com"])
    result = mapped(alice(proxyAddresses=["smtp:old-alice@example.com"]), domain_spec=excluding)
    assert result.recipients == {"alice@example.com": mailbox("Alice Smith", GUID_TEXT)}
    assert dropped(result) == {EXCLUDED: 1}


# --- addresses that are not addresses -----------------------------------------------------------


def test_invalid_addresses_are_dropped_and_counted() -> None:
    result = mapped(
        alice(
            proxyAddresses=[
                "smtp:no-at-sign.example.com",
                "smtp:@example.com",
                "smtp:alice@",
                "smtp:al ice@example.com",
                "smtp:alice@example..com",
                "smtp:good@example.com",
            ]
        )
    )
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "good@example.com": alias("alice@example.com"),
    }
    assert dropped(result) == {INVALID: 5}


def test_an_invalid_primary_drops_the_whole_entry() -> None:
    result = mapped(alice(mail=["Alice Smith"], proxyAddresses=["smtp:alias@example.com"]))
    assert result.recipients == {}
    assert dropped(result) == {INVALID: 1}


def test_an_entry_without_any_address_is_counted() -> None:
    result = mapped(
        entry("CN=Printer,DC=example,DC=com", displayName=["Printer"]),
        alice(mail=[], proxyAddresses=["X500:/o=Example/cn=alice"]),
    )
    assert result.recipients == {}
    assert dropped(result) == {NO_ADDRESS: 2}
    assert result.entries_read == 2


# --- identity -----------------------------------------------------------------------------------


def test_an_object_guid_is_rendered_in_the_usual_guid_form() -> None:
    result = mapped(alice(objectGUID=[bytes.fromhex("00112233445566778899aabbccddeeff")]))
    assert result.recipients["alice@example.com"].id == "33221100-5544-7766-8899-aabbccddeeff"


def test_other_binary_ids_are_base64() -> None:
    binary_id = spec(users={"id_attribute": "msDS-ConsistencyGuid"})
    result = mapped(
        alice(**{"msDS-ConsistencyGuid": [b"\x01\x02\x03\x04\x05"]}), domain_spec=binary_id
    )
    assert result.recipients["alice@example.com"].id == "base64:AQIDBAU="
    # An objectGUID that is not 16 bytes long is not a GUID either.
    result = mapped(alice(objectGUID=[b"\x01\x02\x03\x04\x05"]))
    assert result.recipients["alice@example.com"].id == "base64:AQIDBAU="


def test_a_text_id_is_kept_as_it_is() -> None:
    result = mapped(alice(objectGUID=["{9C6F549D-3B72-9B35-275D-748825EE4A37}"]))
    assert result.recipients["alice@example.com"].id == "{9C6F549D-3B72-9B35-275D-748825EE4A37}"


def test_an_entry_without_an_id_is_identified_by_its_dn_and_counted() -> None:
    result = mapped(
        alice(objectGUID=[]), entry("CN=Bob,DC=example,DC=com", mail=["bob@example.com"])
    )
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", "CN=Alice Smith,OU=Staff,DC=example,DC=com"),
        "bob@example.com": mailbox(None, "CN=Bob,DC=example,DC=com"),
    }
    assert result.entries_without_id == 2


def test_a_spec_without_an_id_attribute_uses_dns_as_ids() -> None:
    generic = spec(directory={"flavor": "generic", "ldif": "x.ldif"})
    result = mapped(
        entry("uid=dan,dc=example,dc=com", mail=["dan@example.com"], cn=["Dan"]),
        domain_spec=generic,
    )
    assert result.recipients == {"dan@example.com": mailbox("Dan", "uid=dan,dc=example,dc=com")}
    assert result.entries_without_id == 1


# --- conflicts ----------------------------------------------------------------------------------


def test_an_address_claimed_by_two_entries_is_a_conflict_and_no_recipient() -> None:
    bob = entry(
        "CN=Bob Jones,OU=Staff,DC=example,DC=com",
        mail=["bob@example.com"],
        proxyAddresses=["smtp:Sales@example.com"],
        objectGUID=[bytes(16)],
    )
    result = mapped(alice(proxyAddresses=["smtp:sales@example.com"]), bob)
    assert result.conflict_list() == (
        Conflict(
            "sales@example.com",
            (
                "CN=Alice Smith,OU=Staff,DC=example,DC=com",
                "CN=Bob Jones,OU=Staff,DC=example,DC=com",
            ),
        ),
    )
    assert result.conflict_list()[0].describe() == (
        "sales@example.com is claimed by 2 entries: "
        "CN=Alice Smith,OU=Staff,DC=example,DC=com; CN=Bob Jones,OU=Staff,DC=example,DC=com"
    )
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "bob@example.com": mailbox(None, "00000000-0000-0000-0000-000000000000"),
    }


def test_a_mailbox_address_claimed_by_three_entries_names_all_of_them() -> None:
    entries = [
        entry(f"CN=User{n},DC=example,DC=com", mail=["shared@example.com"]) for n in (3, 1, 2)
    ]
    result = mapped(*entries)
    assert result.recipients == {}
    assert result.conflict_list() == (
        Conflict(
            "shared@example.com",
            (
                "CN=User1,DC=example,DC=com",
                "CN=User2,DC=example,DC=com",
                "CN=User3,DC=example,DC=com",
            ),
        ),
    )


def test_the_same_address_twice_in_one_entry_is_no_conflict() -> None:
    result = mapped(
        alice(
            mail=["alice@example.com", "ALICE@example.com"],
            proxyAddresses=[
                "SMTP:alice@example.com",
                "smtp:a.smith@example.com",
                "smtp:A.Smith@Example.com",
            ],
        )
    )
    assert result.conflict_list() == ()
    assert result.recipients == {
        "alice@example.com": mailbox("Alice Smith", GUID_TEXT),
        "a.smith@example.com": alias("alice@example.com"),
    }
    assert dropped(result) == {}


def test_mapping_streams_any_iterable_once() -> None:
    def generate() -> Any:
        yield alice()
        yield entry("CN=Bob,DC=example,DC=com", mail=["bob@example.com"])

    result = map_entries(generate(), AD)
    assert sorted(result.recipients) == ["alice@example.com", "bob@example.com"]
    assert result.entries_read == 2


def test_an_excluded_person_takes_every_address_of_theirs_along() -> None:
    spec = build_spec(
        {
            "domain": "example.com",
            "directory": {"flavor": "active_directory", "ldif": "x.ldif"},
            "exclude": ["forgetme*@*"],
        },
        Path("x.yaml"),
        Path(),
    )
    entry = Entry(
        "CN=Forget Me,DC=example,DC=com",
        {
            "mail": ["forgetme1@example.com"],
            "proxyaddresses": ["SMTP:forgetme1@example.com", "smtp:f.me@example.com"],
        },
    )
    result = map_entries([entry], spec)
    assert result.recipients == {}
    assert result.dropped == {"excluded": 2}


# --- the inline path (no exclusions, no trace) is the general one, faster ----------------------

_local_parts = st.sampled_from(
    ["a", "b", "c", "Bob", "d.e", "x y", "", " a", "é", "a" * 64, "a" * 65, "a+b"]
)
_domains = st.sampled_from(
    [
        "example.com",
        "EXAMPLE.COM",
        "example.net",
        "contoso.test",
        "x",
        "example.com ",
        "Example.Net.",
    ]
)
_addresses = st.builds(lambda local, domain: f"{local}@{domain}", _local_parts, _domains)
_proxy = st.one_of(
    _addresses.map(lambda a: "SMTP:" + a),
    _addresses.map(lambda a: "smtp:" + a),
    _addresses.map(lambda a: "Smtp:" + a),
    _addresses,
    st.just("X500:/o=Example/cn=a"),
    st.just(b"\xff"),
)
_entries = st.lists(
    st.tuples(st.lists(_addresses, max_size=3), st.lists(_proxy, max_size=4)), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(drawn=_entries)
def test_addresses_claimed_inline_are_claimed_as_with_exclusions_or_a_trace(
    drawn: list[tuple[list[str], list[Value]]],
) -> None:
    entries = [
        entry(f"CN=u{n},DC=example,DC=com", mail=mail, proxyAddresses=proxy, objectGUID=[f"{n}"])
        for n, (mail, proxy) in enumerate(drawn)
    ]
    domain_spec = spec(domain_aliases=["example.net"])
    inline = map_entries(entries, domain_spec)
    excluding = map_entries(
        entries, spec(domain_aliases=["example.net"], exclude=["nobody@nowhere.invalid"])
    )
    traced = map_entries(entries, domain_spec, trace="a@example.com")
    for general in (excluding, traced):
        assert inline.recipients == general.recipients
        assert inline.owners == general.owners
        assert inline.conflicts == general.conflicts
        assert inline.dropped == general.dropped
        assert inline.invalid == general.invalid


def test_conflict_lines_show_an_unprintable_dn_quoted() -> None:
    """DNs are printed as the directory sends them, unless one would break the line."""
    conflict = Conflict("a@example.com", ("CN=Ann,DC=x", "CN=Bob\n+ b@example.com,DC=x"))
    assert conflict.describe() == (
        'a@example.com is claimed by 2 entries: CN=Ann,DC=x; "CN=Bob\\n+ b@example.com,DC=x"'
    )
