"""LdifSource: an LDIF export (RFC 2849) read the way a directory search would return it.

Each test writes a small export into tmp_path and lists the entries the source yields: folding,
base64, comments, line endings and the ``version:`` header are the parser's business; the base
DN scope, the users filter, the kept attributes and errors naming file and line are the source's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.directory import Entry
from reconciler.errors import DirectoryError
from reconciler.ldif_source import LdifSource
from reconciler.spec import UsersSpec, build_spec

AD_FILTER = "(&(objectCategory=person)(objectClass=user)(mail=*))"
GUID_ALICE = bytes.fromhex("9d546f9c723b359b275d748825ee4a37")  # not valid UTF-8


def users_spec(**users: object) -> UsersSpec:
    """The users part of an active_directory spec (flavor defaults, overridden by ``users``)."""
    merged = {
        "domain": "example.com",
        "directory": {"flavor": "active_directory", "ldif": "x.ldif"},
        "users": users,
    }
    return build_spec(merged, Path("x.yaml"), Path()).users


# mail, proxyAddresses, displayName, objectGUID (no user name); the filter of the AD flavor.
AD_USERS = users_spec(username_attribute=None)
ANY_MAIL = users_spec(filter="(mail=*)", username_attribute=None)


def write(tmp_path: Path, text: str, *, newline: str = "\n") -> Path:
    path = tmp_path / "export.ldif"
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def read(
    tmp_path: Path,
    text: str,
    base_dn: str | None = "DC=example,DC=com",
    users: UsersSpec = ANY_MAIL,
    *,
    newline: str = "\n",
) -> list[Entry]:
    return list(LdifSource(write(tmp_path, text, newline=newline), base_dn, users).entries())


def read_error(tmp_path: Path, text: str, users: UsersSpec = ANY_MAIL) -> DirectoryError:
    with pytest.raises(DirectoryError) as caught:
        read(tmp_path, text, users=users)
    return caught.value


ALICE = """\
dn: CN=Alice Smith,OU=Staff,DC=example,DC=com
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: Alice Smith
displayName: Alice Smith
sAMAccountName: asmith
objectCategory: CN=Person,CN=Schema,CN=Configuration,DC=example,DC=com
mail: alice@example.com
proxyAddresses: SMTP:alice@example.com
proxyAddresses: smtp:a.smith@example.net
objectGUID:: nVRvnHI7NZsnXXSIJe5KNw==
"""

BOB = """\
dn: CN=Bob Jones,OU=Staff,DC=example,DC=com
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
displayName: Bob Jones
objectCategory: CN=Person,CN=Schema,CN=Configuration,DC=example,DC=com
mail: bob@example.com
"""

ALICE_ENTRY = Entry(
    "CN=Alice Smith,OU=Staff,DC=example,DC=com",
    {
        "displayname": ["Alice Smith"],
        "mail": ["alice@example.com"],
        "proxyaddresses": ["SMTP:alice@example.com", "smtp:a.smith@example.net"],
        "objectguid": [GUID_ALICE],
    },
)
BOB_ENTRY = Entry(
    "CN=Bob Jones,OU=Staff,DC=example,DC=com",
    {"displayname": ["Bob Jones"], "mail": ["bob@example.com"]},
)


# --- what an entry holds ------------------------------------------------------------------------


def test_an_entry_keeps_only_the_requested_attributes_under_lower_case_names(
    tmp_path: Path,
) -> None:
    assert read(tmp_path, ALICE, users=AD_USERS) == [ALICE_ENTRY]


def test_attribute_names_are_case_insensitive_and_their_values_are_joined(tmp_path: Path) -> None:
    text = """\
dn: CN=Carol,DC=example,DC=com
Mail: carol@example.com
MAIL: c.white@example.com
DISPLAYNAME: Carol White
"""
    [entry] = read(tmp_path, text)
    assert entry.attributes == {
        "mail": ["carol@example.com", "c.white@example.com"],
        "displayname": ["Carol White"],
    }


def test_entries_come_in_file_order(tmp_path: Path) -> None:
    assert read(tmp_path, ALICE + "\n" + BOB, users=AD_USERS) == [ALICE_ENTRY, BOB_ENTRY]


# --- RFC 2849 syntax ----------------------------------------------------------------------------


def test_folded_lines_are_joined_dn_text_base64_and_comments_alike(tmp_path: Path) -> None:
    # Each continuation line starts with one space that is not part of the value.
    text = """\
# An export with long lines, folded at
  arbitrary places (this comment is folded too)
dn: CN=Zoe Angstrom,OU=Staff,DC=exa
 mple,DC=com
# a comment inside the entry,
 also folded
displayName:: Wm/DqyDDhW5
 nc3Ryw7Zt
mail: zoe.angstrom@exam
 ple.com
proxyAddresses: smtp:z
 oe@example.net
objectGUID:: nVRvnHI7NZ
 snXXSIJe5KNw==
"""
    assert read(tmp_path, text) == [
        Entry(
            "CN=Zoe Angstrom,OU=Staff,DC=example,DC=com",
            {
                "displayname": ["Zoë Ångström"],
                "mail": ["zoe.angstrom@example.com"],
                "proxyaddresses": ["smtp:zoe@example.net"],
                "objectguid": [GUID_ALICE],
            },
        )
    ]


def test_base64_values_are_utf8_text_and_a_base64_dn_is_decoded(tmp_path: Path) -> None:
    text = """\
dn:: Q049Wm/DqyDDhW5nc3Ryw7ZtLE9VPVN0YWZmLERDPWV4YW1wbGUsREM9Y29t
displayName:: w4FnbmVzIEvDoWxuw6FyLCBNw7xsbGVy
mail:: em9lQGV4YW1wbGUuY29t
"""
    assert read(tmp_path, text, users=AD_USERS) == []  # not a person: the AD filter says no
    [entry] = read(tmp_path, text)
    assert entry.dn == "CN=Zoë Ångström,OU=Staff,DC=example,DC=com"
    assert entry.attributes == {
        "displayname": ["Ágnes Kálnár, Müller"],
        "mail": ["zoe@example.com"],
    }


def test_a_binary_object_guid_stays_bytes(tmp_path: Path) -> None:
    [entry] = read(tmp_path, ALICE, users=AD_USERS)
    assert entry.first("objectGUID") == GUID_ALICE


def test_an_object_guid_whose_bytes_happen_to_be_utf8_still_stays_bytes(tmp_path: Path) -> None:
    # 1 in about 65,000 GUIDs is all ASCII; it must not turn into a 16-character "name".
    text = """\
dn: CN=Dan,DC=example,DC=com
mail: dan@example.com
objectGUID:: MDEyMzQ1Njc4OWFiY2RlZg==
"""
    [entry] = read(tmp_path, text)
    assert entry.attributes["objectguid"] == [b"0123456789abcdef"]


def test_comments_and_extra_blank_lines_between_entries_are_ignored(tmp_path: Path) -> None:
    text = f"""\
# Example Corp export
#
# Staff

{ALICE}


# ---- Sales ----
# (Bob is in sales)

{BOB}
# trailing comment
"""
    assert read(tmp_path, text, users=AD_USERS) == [ALICE_ENTRY, BOB_ENTRY]


def test_crlf_line_endings_give_the_same_entries_as_lf(tmp_path: Path) -> None:
    text = f"""\
version: 1

# folded and base64 values with CRLF
dn: CN=Zoe,OU=Staff,DC=exa
 mple,DC=com
displayName:: Wm/DqyDDhW5
 nc3Ryw7Zt
mail: zoe@example.com

{ALICE}
{BOB}"""
    lf = read(tmp_path, text)
    crlf = read(tmp_path, text, newline="\r\n")
    assert b"\r\n" in (tmp_path / "export.ldif").read_bytes()
    assert [e.dn for e in lf] == [
        "CN=Zoe,OU=Staff,DC=example,DC=com",
        "CN=Alice Smith,OU=Staff,DC=example,DC=com",
        "CN=Bob Jones,OU=Staff,DC=example,DC=com",
    ]
    assert lf[0].attributes["displayname"] == ["Zoë Ångström"]
    assert crlf == lf


@pytest.mark.parametrize(
    "header",
    ["version: 1\n\n", "version: 1\n", "version: 1\n# exported by ldifde\n\n"],
    ids=["blank-line-after", "no-blank-line", "comment-after"],
)
def test_a_version_header_gives_the_same_entries_as_none(tmp_path: Path, header: str) -> None:
    assert read(tmp_path, header + ALICE + "\n" + BOB, users=AD_USERS) == [ALICE_ENTRY, BOB_ENTRY]


def test_an_empty_export_has_no_entries(tmp_path: Path) -> None:
    assert read(tmp_path, "version: 1\n# nothing exported\n") == []


# --- the search: base DN and filter -------------------------------------------------------------

SCOPED = """\
dn: DC=example,DC=com
mail: root@example.com

dn: CN=In Staff,OU=Staff,DC=example,DC=com
mail: staff@example.com

dn: CN=Other,DC=other,DC=com
mail: other@other.com

dn: CN=Lookalike,DC=myexample,DC=com
mail: lookalike@myexample.com

dn: cn=lower case,ou=staff,dc=EXAMPLE,dc=COM
mail: lower@example.com
"""


def test_only_entries_at_or_below_the_base_dn_are_read(tmp_path: Path) -> None:
    assert [e.dn for e in read(tmp_path, SCOPED, "OU=Staff,DC=example,DC=com")] == [
        "CN=In Staff,OU=Staff,DC=example,DC=com",
        "cn=lower case,ou=staff,dc=EXAMPLE,dc=COM",
    ]
    assert [e.dn for e in read(tmp_path, SCOPED, "DC=example,DC=com")] == [
        "DC=example,DC=com",
        "CN=In Staff,OU=Staff,DC=example,DC=com",
        "cn=lower case,ou=staff,dc=EXAMPLE,dc=COM",
    ]


def test_base_dn_comparison_ignores_case_and_spaces_around_rdns(tmp_path: Path) -> None:
    assert [e.dn for e in read(tmp_path, SCOPED, " ou=STAFF , dc=Example,  DC=com ")] == [
        "CN=In Staff,OU=Staff,DC=example,DC=com",
        "cn=lower case,ou=staff,dc=EXAMPLE,dc=COM",
    ]


def test_without_a_base_dn_every_entry_is_read(tmp_path: Path) -> None:
    assert len(read(tmp_path, SCOPED, None)) == 5
    assert len(read(tmp_path, SCOPED, "")) == 5


def test_the_ad_users_filter_matches_an_object_category_given_as_a_dn(tmp_path: Path) -> None:
    contact = """\
dn: CN=Partner Contact,OU=Contacts,DC=example,DC=com
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: contact
objectCategory: CN=Person,CN=Schema,CN=Configuration,DC=example,DC=com
mail: partner@partner.example.org
"""
    computer = """\
dn: CN=WS01,OU=Computers,DC=example,DC=com
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
objectClass: computer
objectCategory: CN=Computer,CN=Schema,CN=Configuration,DC=example,DC=com
mail: ws01@example.com
"""
    no_mail = """\
dn: CN=No Mail,OU=Staff,DC=example,DC=com
objectClass: user
objectCategory: CN=Person,CN=Schema,CN=Configuration,DC=example,DC=com
"""
    text = "\n".join([contact, ALICE, computer, no_mail, BOB])
    assert AD_USERS.filter == AD_FILTER
    assert [e.dn for e in read(tmp_path, text, users=AD_USERS)] == [ALICE_ENTRY.dn, BOB_ENTRY.dn]
    # The contact and the computer are there; only the filter leaves them out.
    assert len(read(tmp_path, text, users=users_spec(filter="(objectClass=*)"))) == 5


def test_filter_attributes_need_not_be_kept_attributes(tmp_path: Path) -> None:
    # sAMAccountName is not requested, yet the filter sees it.
    [entry] = read(
        tmp_path,
        ALICE + "\n" + BOB,
        users=users_spec(filter="(sAMAccountName=asm*)", username_attribute=None),
    )
    assert entry.dn == ALICE_ENTRY.dn
    assert "samaccountname" not in entry.attributes


# --- errors: the file, the line where the bad record starts, and why ----------------------------

# Two good records, separated by comments and several blank lines, before the one under test.
PREFIX = f"""\
version: 1

# first record at line 4
{BOB}

# a folded
  comment

{ALICE}
"""
BAD_RECORD_LINE = 31
assert PREFIX.count("\n") + 1 == BAD_RECORD_LINE


def test_a_line_without_a_colon_names_the_file_and_the_records_first_line(tmp_path: Path) -> None:
    text = (
        PREFIX
        + """\
dn: CN=Broken,DC=example,DC=com
mail: broken@example.com
this line has no colon
"""
    )
    error = read_error(tmp_path, text)
    path = tmp_path / "export.ldif"
    assert error.message == (
        f"{path}:{BAD_RECORD_LINE}: unreadable LDIF record: "
        "a line is not 'attribute: value' (no colon)"
    )
    assert error.hint is not None
    assert "nothing was applied" in error.hint


def test_the_line_number_is_right_with_crlf_line_endings(tmp_path: Path) -> None:
    text = PREFIX + "dn: CN=Broken,DC=example,DC=com\nno colon\n"
    with pytest.raises(DirectoryError, match=rf"export\.ldif:{BAD_RECORD_LINE}: unreadable"):
        read(tmp_path, text, newline="\r\n")


def test_invalid_base64_is_an_error_at_its_record(tmp_path: Path) -> None:
    text = PREFIX + "dn: CN=Broken,DC=example,DC=com\nmail:: YWxpY2U\n"
    error = read_error(tmp_path, text)
    assert error.message == (
        f"{tmp_path / 'export.ldif'}:{BAD_RECORD_LINE}: unreadable LDIF record: Incorrect padding"
    )


def test_the_first_record_in_the_file_is_line_1(tmp_path: Path) -> None:
    error = read_error(tmp_path, "dn: CN=Broken,DC=example,DC=com\nmail:: YWxpY2U\n")
    assert error.message.startswith(f"{tmp_path / 'export.ldif'}:1: unreadable LDIF record")


def test_a_record_that_does_not_start_with_dn_is_an_error(tmp_path: Path) -> None:
    text = PREFIX + "cn: Nobody\nmail: nobody@example.com\n"
    error = read_error(tmp_path, text)
    assert error.message == (
        f"{tmp_path / 'export.ldif'}:{BAD_RECORD_LINE}: unreadable LDIF record: "
        "First line of record does not start with 'dn:': cn"
    )


def test_a_modify_change_record_is_refused_as_a_change_record(tmp_path: Path) -> None:
    text = (
        PREFIX
        + """\
dn: CN=Alice Smith,OU=Staff,DC=example,DC=com
changetype: modify
replace: mail
mail: alice.smith@example.com
-
"""
    )
    error = read_error(tmp_path, text)
    assert error.message == (
        f"{tmp_path / 'export.ldif'}:{BAD_RECORD_LINE}: a change record (changetype 'modify')"
    )
    assert error.hint == "export the directory's entries (content LDIF), not changes"


def test_an_add_change_record_is_refused_naming_its_dn(tmp_path: Path) -> None:
    text = PREFIX + "dn: CN=New,DC=example,DC=com\nchangetype: add\nmail: new@example.com\n"
    error = read_error(tmp_path, text)
    assert error.message == (
        f"{tmp_path / 'export.ldif'}:{BAD_RECORD_LINE}: CN=New,DC=example,DC=com "
        "is a change record (changetype 'add')"
    )


def test_a_change_record_outside_the_base_dn_is_still_refused(tmp_path: Path) -> None:
    text = "dn: CN=X,DC=other,DC=com\nchangetype: delete\n"
    with pytest.raises(DirectoryError, match="is a change record"):
        read(tmp_path, text)


def test_a_missing_file_is_a_directory_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.ldif"
    source = LdifSource(path, None, AD_USERS)
    with pytest.raises(DirectoryError) as caught:
        list(source.entries())
    assert caught.value.message == (
        f"{path}: cannot read the LDIF export: No such file or directory"
    )


def test_describe_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "export.ldif"
    assert LdifSource(path, None, AD_USERS).describe() == f"LDIF {path}"
