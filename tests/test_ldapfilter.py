"""RFC 4515 filter parsing (with exact error positions) and evaluation against LDIF entries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import ConfigError, FilterSyntaxError
from reconciler.ldapfilter import (
    And,
    Approx,
    Equality,
    Extensible,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substrings,
    escape_filter_value,
    parse_filter,
)

AD_USER = "(&(objectCategory=person)(objectClass=user)(mail=*))"


# --- parsing: valid filters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(cn=Alice)", Equality("cn", "Alice")),
        ("(cn=John Smith)", Equality("cn", "John Smith")),
        ("(cn=)", Equality("cn", "")),
        ("(cn~=alise)", Approx("cn", "alise")),
        ("(uidNumber>=1000)", GreaterOrEqual("uidNumber", "1000")),
        ("(uidNumber<=99)", LessOrEqual("uidNumber", "99")),
        ("(mail=*)", Present("mail")),
        ("(cn=a*)", Substrings("cn", "a", (), None)),
        ("(cn=*z)", Substrings("cn", None, (), "z")),
        ("(cn=a*m*z)", Substrings("cn", "a", ("m",), "z")),
        ("(cn=*m*n*)", Substrings("cn", None, ("m", "n"), None)),
        ("(cn=a**z)", Substrings("cn", "a", (), "z")),
        ("(!(cn=a))", Not(Equality("cn", "a"))),
        ("(|(cn=a)(sn=b))", Or((Equality("cn", "a"), Equality("sn", "b")))),
        ("(&(cn=a))", And((Equality("cn", "a"),))),
        ("(2.5.4.3=x)", Equality("2.5.4.3", "x")),
        ("(cn;lang-en=x)", Equality("cn;lang-en", "x")),
        ("(cn:=x)", Extensible("cn", None, "x", False)),
        ("(cn:caseExactMatch:=X)", Extensible("cn", "caseExactMatch", "X", False)),
        ("(cn:dn:2.5.13.5:=x)", Extensible("cn", "2.5.13.5", "x", True)),
        ("(cn:DN:=x)", Extensible("cn", None, "x", True)),
        ("(:dn:2.5.13.5:=x)", Extensible(None, "2.5.13.5", "x", True)),
        ("(:caseIgnoreMatch:=x)", Extensible(None, "caseIgnoreMatch", "x", False)),
        ("(cn:dnx:=x)", Extensible("cn", "dnx", "x", False)),
        ("(cn=\\2a)", Equality("cn", "*")),
        ("(cn=caf\\c3\\a9)", Equality("cn", "café")),
        ("(objectGUID=\\ff\\00)", Equality("objectGUID", b"\xff\x00")),
        ("  (cn=a)\n", Equality("cn", "a")),
    ],
)
def test_valid_filters_parse_to_the_expected_tree(text: str, expected: object) -> None:
    assert parse_filter(text) == expected


def test_ad_user_filter_parses_to_an_and_of_three_items() -> None:
    assert parse_filter(AD_USER) == And(
        (Equality("objectCategory", "person"), Equality("objectClass", "user"), Present("mail"))
    )


# --- parsing: invalid filters, each with the exact position -------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 0, "expected '(' to start a filter, found end of filter"),
        ("cn=a", 0, "expected '(' to start a filter, found 'c'"),
        ("(a=b", 4, "expected ')' to close the filter opened at character 1"),
        ("(&(a=b)", 7, "expected ')' to close the filter opened at character 1"),
        ("(&(a=b", 6, "expected ')' to close the filter opened at character 3"),
        ("(!(a=b)(c=d))", 7, "expected ')' to close the filter opened at character 1"),
        ("(a=b))", 5, "unexpected ')' after the end of the filter"),
        ("(a=b)x", 5, "unexpected 'x' after the end of the filter"),
        ("(=a)", 1, "empty attribute name"),
        ("(;x=a)", 1, "empty attribute name"),
        ("(c n=a)", 2, "after attribute description 'c', found a space"),
        ("(cn)", 3, "expected '=', '~=', '>=', '<=' or ':='"),
        ("(a=\\zz)", 3, "invalid escape '\\zz': a backslash must be followed by two hex digits"),
        ("(a=x\\2)", 4, "invalid escape '\\2)'"),
        ("(a=x\\", 4, "invalid escape '\\'"),
        ("(&)", 2, "'&' needs at least one sub-filter"),
        ("(|)", 2, "'|' needs at least one sub-filter"),
        ("((a=b))", 1, "expected an attribute description, '&', '|' or '!', found '('"),
        ("()", 1, "expected an attribute description, '&', '|' or '!', found ')'"),
        ("(a=b(c))", 4, "unescaped '(' in a value; write it as \\28"),
        ("(a=b\0)", 4, "unescaped NUL in a value"),
        ("(a~b)", 3, "expected '=' after '~', found 'b'"),
        ("(a>=b*)", 5, "'*' is only allowed after '='"),
        ("(cn:=a*)", 6, "not after ':='"),
        ("(& (a=b))", 2, "found a space"),
        ("(!a=b)", 2, "expected '(' to start a filter, found 'a'"),
        ("(1=a)", 1, "invalid numeric OID"),
        ("(01.2=a)", 1, "invalid numeric OID"),
        ("(cn;=a)", 4, "expected an attribute option after ';'"),
        ("(:=a)", 1, "an extensible match without an attribute needs a matching rule"),
        ("(:dn:=a)", 4, "needs a matching rule"),
        ("(cn:foo)", 7, "expected ':=' after matching rule 'foo'"),
        ("(cn:)", 4, "expected a matching rule name or OID"),
        ("(cn=\ud800)", 4, "lone surrogate"),
    ],
)
def test_invalid_filters_report_the_exact_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    assert caught.value.position == position
    assert fragment in caught.value.reason
    assert caught.value.filter_text == text


def test_too_deep_nesting_is_a_syntax_error_not_a_recursion_error() -> None:
    with pytest.raises(FilterSyntaxError, match="nested deeper than 100"):
        parse_filter("(!" * 150 + "(a=b)" + ")" * 150)


# --- matching ----------------------------------------------------------------------------------

AD_ENTRY = {
    "objectcategory": ["CN=Person,CN=Schema,CN=Configuration,DC=example,DC=com"],
    "objectclass": ["top", "person", "organizationalPerson", "user"],
    "mail": ["alice@example.com"],
    "cn": ["Alice  Van   Der Berg"],
    "useraccountcontrol": ["512"],
}


def test_ad_user_filter_matches_users_with_mail_only() -> None:
    # objectCategory holds a DN in AD; the server maps "person" to it, an export does not.
    entry = {**AD_ENTRY, "objectcategory": ["person"]}
    assert parse_filter(AD_USER).matches(entry)
    assert not parse_filter(AD_USER).matches({**entry, "mail": []})
    assert not parse_filter(AD_USER).matches({k: v for k, v in entry.items() if k != "mail"})
    assert not parse_filter(AD_USER).matches({**entry, "objectclass": ["top", "group"]})


def test_attribute_names_and_values_compare_case_insensitively() -> None:
    assert parse_filter("(OBJECTCLASS=USER)").matches(AD_ENTRY)
    assert parse_filter("(cn;lang-en=alice van der berg)").matches(AD_ENTRY)
    assert parse_filter("(cn=  ALICE VAN DER BERG )").matches(AD_ENTRY)
    assert parse_filter("(cn~=alice van der berg)").matches(AD_ENTRY)
    assert not parse_filter("(cn=Alice Van)").matches(AD_ENTRY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(cn=*)", True),
        ("(cn=alice*)", True),
        ("(cn=ALICE VAN*)", True),
        ("(cn=alicev*)", False),
        ("(cn=*berg)", True),
        ("(cn=*van der*)", True),
        ("(cn=a*van*berg)", True),
        ("(cn=a*berg*van)", False),
        ("(cn=*der*van*)", False),
        ("(cn=alice van der berg*berg)", False),
        ("(cn=*e*e*e*)", True),
        ("(sn=*)", False),
    ],
)
def test_substrings(text: str, expected: bool) -> None:
    assert parse_filter(text).matches(AD_ENTRY) is expected


def test_escaped_star_is_a_literal_not_a_wildcard() -> None:
    assert parse_filter("(cn=a\\2a)").matches({"cn": ["a*"]})
    assert not parse_filter("(cn=a\\2a)").matches({"cn": ["abc"]})
    assert parse_filter("(cn=a*)").matches({"cn": ["abc"]})


def test_special_characters_round_trip_through_escape_filter_value() -> None:
    value = "a(b)c\\d*e\0f"
    escaped = escape_filter_value(value)
    assert escaped == "a\\28b\\29c\\5cd\\2ae\\00f"
    assert parse_filter(f"(cn={escaped})") == Equality("cn", value)
    assert parse_filter(f"(cn={escaped})").matches({"cn": [value]})


def test_ordering_is_numeric_for_integers_and_textual_otherwise() -> None:
    entry = {"uidnumber": ["1000"], "sn": ["Miller"], "when": ["20240101000000Z"]}
    assert parse_filter("(uidNumber>=999)").matches(entry)  # as text "1000" < "999"
    assert not parse_filter("(uidNumber<=999)").matches(entry)
    assert parse_filter("(uidNumber<=1000)").matches(entry)
    assert parse_filter("(uidNumber>=-5)").matches(entry)
    assert parse_filter("(sn>=m)").matches(entry)
    assert parse_filter("(sn<=MILLER)").matches(entry)
    assert not parse_filter("(sn<=l)").matches(entry)
    assert parse_filter("(when>=20231231000000Z)").matches(entry)


def test_not_is_true_when_the_attribute_is_absent() -> None:
    assert parse_filter("(!(department=Sales))").matches({"cn": ["x"]})
    assert not parse_filter("(department=Sales)").matches({"cn": ["x"]})
    assert not parse_filter("(!(cn=x))").matches({"cn": ["x"]})


def test_multi_valued_attribute_matches_when_any_value_does() -> None:
    assert parse_filter("(objectClass=person)").matches(AD_ENTRY)
    assert not parse_filter("(objectClass=group)").matches(AD_ENTRY)


@pytest.mark.parametrize(
    ("uac", "enabled"), [("512", True), ("514", False), ("66050", False), ("66048", True)]
)
def test_bitwise_and_finds_disabled_accounts(uac: str, enabled: bool) -> None:
    f = parse_filter("(!(userAccountControl:1.2.840.113556.1.4.803:=2))")
    assert f.matches({"useraccountcontrol": [uac]}) is enabled


def test_bitwise_and_needs_all_bits_and_or_needs_any() -> None:
    entry = {"useraccountcontrol": ["66050"]}  # 0x10202
    assert parse_filter("(userAccountControl:1.2.840.113556.1.4.803:=65538)").matches(entry)
    assert not parse_filter("(userAccountControl:1.2.840.113556.1.4.803:=3)").matches(entry)
    assert parse_filter("(userAccountControl:1.2.840.113556.1.4.804:=3)").matches(entry)
    assert not parse_filter("(userAccountControl:1.2.840.113556.1.4.804:=5)").matches(entry)
    assert not parse_filter("(userAccountControl:1.2.840.113556.1.4.803:=2)").matches(
        {"useraccountcontrol": ["not a number"]}
    )


def test_bitwise_and_handles_negative_group_type() -> None:
    # -2147483646: a global security group (0x80000002 as a signed 32-bit integer).
    security = "(groupType:1.2.840.113556.1.4.803:=2147483648)"
    assert parse_filter(security).matches({"grouptype": ["-2147483646"]})
    assert not parse_filter(security).matches({"grouptype": ["2"]})


def test_extensible_case_rules() -> None:
    entry = {"cn": ["Alice"]}
    assert parse_filter("(cn:caseIgnoreMatch:=ALICE)").matches(entry)
    assert parse_filter("(cn:2.5.13.2:=alice)").matches(entry)
    assert parse_filter("(cn:=alice)").matches(entry)
    assert parse_filter("(cn:caseExactMatch:=Alice)").matches(entry)
    assert not parse_filter("(cn:caseExactMatch:=alice)").matches(entry)
    assert not parse_filter("(cn:2.5.13.5:=ALICE)").matches(entry)


def test_bytes_values_compare_byte_exact() -> None:
    guid = b"\xff\x10\x00\xab"
    entry = {"objectguid": [guid], "photo": [b"\xffAB"]}
    assert parse_filter("(objectGUID=\\ff\\10\\00\\ab)").matches(entry)
    assert not parse_filter("(objectGUID=\\ff\\10\\00\\AC)").matches(entry)
    assert parse_filter("(objectGUID=*)").matches(entry)
    assert parse_filter("(photo=\\ff*)").matches(entry)
    assert not parse_filter("(photo=\\ff*b)").matches(entry)  # no case folding for binary


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("(memberOf:1.2.840.113556.1.4.1941:=CN=G,DC=x)", "matching rule 1.2.840.113556.1.4.1941"),
        ("(cn:dn:=x)", "':dn:'"),
        ("(:caseExactMatch:=x)", "without an attribute"),
    ],
)
def test_unsupported_matching_raises_config_error_naming_it(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="cannot be evaluated on an LDIF export") as caught:
        parse_filter(text).matches({"cn": ["x"]})
    assert fragment in caught.value.message
    assert not isinstance(caught.value, FilterSyntaxError)


def test_unsupported_rule_raises_even_when_an_earlier_branch_decides() -> None:
    f = parse_filter("(|(cn=x)(memberOf:1.2.840.113556.1.4.1941:=CN=G))")
    with pytest.raises(ConfigError, match=r"1\.2\.840\.113556\.1\.4\.1941"):
        f.matches({"cn": ["x"]})


def test_attributes_lists_lower_cased_names_without_options() -> None:
    f = parse_filter(
        "(&(objectClass=user)(!(cn;lang-en=a*))(|(Mail=*)(uac:1.2.840.113556.1.4.803:=2))"
        "(:caseExactMatch:=x))"
    )
    assert f.attributes() == frozenset({"objectclass", "cn", "mail", "uac"})


# --- property -----------------------------------------------------------------------------------


@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_any_escaped_string_matches_itself(s: str) -> None:
    f = parse_filter(f"(cn={escape_filter_value(s)})")
    assert f == Equality("cn", s)
    assert f.matches({"cn": [s]})
