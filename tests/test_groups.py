"""Groups and lists at their edges: loops between lists refuse the plan naming every list,
an only_members_of group that does not exist is an error, member names are escaped."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import invoke

from reconciler.directory import Entry
from reconciler.groups import Group, members_of, resolve_names

HEAD = """\
dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: uid=alice,dc=example,dc=com
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
mail: alice@example.com
"""


def list_entry(name: str, *members: str) -> str:
    lines = [f"dn: cn={name},dc=example,dc=com", "objectClass: groupOfNames", f"cn: {name}"]
    lines += [f"mail: {name}@example.com"] + [f"member: {m}" for m in members]
    return "\n".join(lines) + "\n"


def inventory(tmp_path: Path, ldif: str, extra: str) -> Path:
    directory = tmp_path / "inventories"
    directory.mkdir()
    (directory / "export.ldif").write_text(ldif, encoding="utf-8")
    spec = "domain: example.com\ndirectory:\n  flavor: openldap\n  ldif: export.ldif\n" + extra
    (directory / "example.com.yaml").write_text(spec, encoding="utf-8")
    return directory


LISTS = "distribution_lists: {attribute: objectClass, value: groupOfNames}\n"


def test_lists_containing_each_other_refuse_the_plan_naming_every_list(tmp_path: Path) -> None:
    ldif = "\n".join(
        [
            HEAD,
            list_entry("a", "uid=alice,dc=example,dc=com", "cn=b,dc=example,dc=com"),
            list_entry("b", "cn=c,dc=example,dc=com"),
            list_entry("c", "cn=a,dc=example,dc=com"),
            list_entry("d", "cn=a,dc=example,dc=com"),  # contains the loop, is not in it
        ]
    )
    result = invoke(
        "plan", "-i", str(inventory(tmp_path, ldif, LISTS)), "--state-dir", str(tmp_path)
    )
    assert result.exit_code == 4, result.output
    assert (
        "  REFUSED: conflict: a@example.com is in a loop of lists containing each other: "
        "cn=a,dc=example,dc=com; cn=b,dc=example,dc=com; cn=c,dc=example,dc=com"
    ) in result.stdout.splitlines()
    assert '+ d@example.com  list "d" 1 members' in result.stdout
    assert "+ a@example.com" not in result.stdout


def test_a_list_in_itself_is_a_loop(tmp_path: Path) -> None:
    ldif = HEAD + "\n" + list_entry("self", "cn=self,dc=example,dc=com")
    result = invoke(
        "plan", "-i", str(inventory(tmp_path, ldif, LISTS)), "--state-dir", str(tmp_path)
    )
    assert result.exit_code == 4
    assert "self@example.com is in a loop of lists containing each other" in result.stdout


def test_only_members_of_a_group_that_is_not_there(tmp_path: Path) -> None:
    groups = "groups:\n  only_members_of: [Mail Users, staff]\n"
    ldif = HEAD + "\n" + list_entry("staff", "uid=alice,dc=example,dc=com")
    result = invoke(
        "plan", "-i", str(inventory(tmp_path, ldif, groups)), "--state-dir", str(tmp_path)
    )
    assert result.exit_code == 1
    assert "groups.only_members_of names 'Mail Users', but groups.filter finds no group" in (
        result.stderr
    )


def test_nested_groups_in_a_cycle_are_each_expanded_once() -> None:
    groups = {
        "cn=a": Group("cn=a", "cn=a", "A", None, ("uid=x", "cn=b")),
        "cn=b": Group("cn=b", "cn=b", "B", None, ("uid=y", "cn=a")),
    }
    assert members_of(groups, ["a"]) == {
        "uid=x": "A",
        "cn=b": "A",
        "uid=y": "A > B",
        "cn=a": "A > B",
    }


class _Source:
    """A directory of literal entries; records the filters it was asked for."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries_ = entries
        self.filters: list[str] = []

    def search(self, search_filter: str, attributes: object) -> list[Entry]:
        from reconciler.ldapfilter import parse_filter

        self.filters.append(search_filter)
        wanted = parse_filter(search_filter)
        return [e for e in self.entries_ if wanted.matches(e.attributes)]


@pytest.mark.parametrize("name", ["dan(temp)*", "a\\b", "*"])
def test_member_names_are_escaped_in_the_member_filter(name: str) -> None:
    people = [
        Entry("uid=dan,dc=x", {"objectclass": ["posixAccount"], "uid": [name]}),
        Entry("uid=other,dc=x", {"objectclass": ["posixAccount"], "uid": ["dan"]}),
    ]
    source = _Source(people)
    found = resolve_names(source, "(&(objectClass=posixAccount)(uid={member}))", [name])  # type: ignore[arg-type]
    assert found == {name: ("uid=dan,dc=x",)}
    assert source.filters == ["(&(objectClass=posixAccount)(uid=*))"]  # one search for all names


def test_lists_without_a_usable_address_are_counted_not_synced(tmp_path: Path) -> None:
    no_mail = "dn: cn=nomail,dc=example,dc=com\nobjectClass: groupOfNames\ncn: nomail\n"
    no_mail += "member: uid=alice,dc=example,dc=com\n"
    bad = list_entry("bad", "uid=alice,dc=example,dc=com").replace(
        "mail: bad@example.com", "mail: bad list@example.com"
    )
    foreign = list_entry("x", "uid=alice,dc=example,dc=com").replace("@example.com", "@other.org")
    ldif = "\n".join([HEAD, no_mail, bad, foreign])
    inv = inventory(tmp_path, ldif, LISTS)
    result = invoke("plan", "-i", str(inv), "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:3] == [
        '  + alice@example.com  mailbox "Alice"',
        "  not managed: 1 entry without address, 1 foreign domain, 1 invalid address",
    ]
