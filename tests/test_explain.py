"""`reconciler explain ADDRESS` on the OpenLDAP export fixture and on rules and disabled accounts:
the entry, attribute or rule and group behind an address, or why it is not a recipient."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gitrepo import invoke

FIXTURES = Path(__file__).parent / "fixtures" / "mapping"

OPENLDAP = """\
domain: example.com
directory:
  flavor: openldap
  ldif: export.ldif
users:
  username_attribute: uid
groups:
  filter: "(objectClass=posixGroup)"
  members_attribute: memberUid
  member_filter: "(|(&(objectClass=posixAccount)(uid={member}))\\
    (&(objectClass=posixGroup)(cn={member})))"
  only_members_of: [mailusers]
distribution_lists: {attribute: objectClass, value: groupOfNames}
rules:
  - {type: alias, attribute: uid, regex: "^([a-z]+)$", format: "{1}.uid@example.com"}
exclude: ["carol@*"]
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    directory = tmp_path / "inventories"
    directory.mkdir()
    shutil.copy(FIXTURES / "openldap_export.ldif", directory / "export.ldif")
    (directory / "example.com.yaml").write_text(OPENLDAP, encoding="utf-8")
    return directory


def explain(inventory: Path, address: str) -> list[str]:
    result = invoke("explain", address, "-i", str(inventory), "--state-dir", str(inventory.parent))
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


BOB = "uid=bob,ou=people,dc=example,dc=com"


@pytest.mark.parametrize(
    ("address", "lines"),
    [
        pytest.param("Bob@Example.com", [
            "bob@example.com in example.com:",
            "  state: not a recipient",
            '  directory now: mailbox "Bob Baker"',
            f"  from {BOB} (mail): mailbox",
            f"  {BOB} is admitted by only_members_of: member of mailusers > developers",
            "  member of list dev@example.com",
            "  member of list staff@example.com",
        ], id="mailbox-via-nested-group"),
        pytest.param("bob.uid@example.com", [
            "bob.uid@example.com in example.com:",
            "  state: not a recipient",
            "  directory now: alias → bob@example.com",
            f"  from {BOB} (domain rule 1 (alias uid '^([a-z]+)$' → '{{1}}.uid@example.com')): "
            "alias of bob@example.com",
            f"  {BOB} is admitted by only_members_of: member of mailusers > developers",
        ], id="alias-from-a-rule"),
        pytest.param("bob..baker@example.com", [
            "bob..baker@example.com in example.com:",
            "  state: not a recipient",
            "  directory now: not a recipient",
            f"  from {BOB} (mailAlternateAddress): invalid address: An email address cannot "
            "have two periods in a row.",
            f"  {BOB} is admitted by only_members_of: member of mailusers > developers",
        ], id="invalid"),
        pytest.param("eve@example.com", [
            "eve@example.com in example.com:",
            "  state: not a recipient",
            "  directory now: not a recipient",
            "  from uid=eve,ou=people,dc=example,dc=com (mail): not in only_members_of",
        ], id="not-a-member"),
        pytest.param("carol@example.com", [
            "carol@example.com in example.com:",
            "  state: not a recipient",
            "  directory now: not a recipient",
            "  from uid=carol,ou=people,dc=example,dc=com (mail): excluded "
            "(with carol@example.com)",
            "  uid=carol,ou=people,dc=example,dc=com is admitted by only_members_of: member of "
            "mailusers > developers > ops",
        ], id="excluded"),
        pytest.param("alice@example.org", [
            "alice@example.org in example.com:",
            "  state: not a recipient",
            "  directory now: not a recipient: foreign domain (not example.com or one of its "
            "domain_aliases)",
            "  from uid=alice,ou=people,dc=example,dc=com (mailAlternateAddress): foreign domain",
            "  uid=alice,ou=people,dc=example,dc=com is admitted by only_members_of: member of "
            "mailusers",
        ], id="foreign-domain"),
        pytest.param("everyone@example.com", [
            "everyone@example.com in example.com:",
            "  state: not a recipient",
            "  directory now: alias → staff@example.com",
            "  from cn=staff,ou=groups,dc=example,dc=com (distribution list): alias of list "
            "staff@example.com",
        ], id="list-alias"),
        pytest.param("nobody@example.com", [
            "nobody@example.com in example.com:",
            "  state: not a recipient",
            "  directory now: not a recipient",
            "  no directory entry the spec reads has this address",
        ], id="unknown"),
    ],
)  # fmt: skip
def test_explain(inventory: Path, address: str, lines: list[str]) -> None:
    assert explain(inventory, address) == lines


def test_explain_shows_the_state_and_a_disabled_account(tmp_path: Path) -> None:
    from gitrepo import User, make_repo

    repo = make_repo(tmp_path, [User("alice", name="Alice")])
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    ldif = repo / "inventories" / "data" / "example.com.ldif"
    ldif.write_text(
        ldif.read_text(encoding="utf-8").replace(
            "cn: alice\n", "cn: alice\nuserAccountControl: 514\n"
        ),
        encoding="utf-8",
    )
    result = invoke("explain", "alice@example.com", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:4] == [
        '  state: mailbox "Alice"',
        '  directory now: mailbox "Alice" (disabled)',
        "  from CN=alice,OU=Staff,DC=example,DC=com (mail): mailbox (disabled account)",
    ]


def test_explain_with_a_broken_spec_is_an_error(inventory: Path) -> None:
    (inventory / "example.com.yaml").write_text("domain: example.com\n", encoding="utf-8")
    result = invoke("explain", "x@example.com", "-i", str(inventory))
    assert result.exit_code == 1
    assert "missing required key 'directory'" in result.stderr
