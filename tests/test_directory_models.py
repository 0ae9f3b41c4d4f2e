"""Groups, distribution lists, only_members_of, disabled accounts and address noise on exports
modelled on real directories (tests/fixtures/mapping): an Active Directory export with a group
of more than 1500 members, and an OpenLDAP export with posixGroup/memberUid and groupOfNames.
Each is read as LDIF and from a real slapd loaded with the same entries: the results must be
identical.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_slapd_tools
from slapd import READER_DN, READER_PASSWORD, SlapdServer

from reconciler.inventory import load_specs
from reconciler.lists import NO_MEMBER_ADDRESS
from reconciler.mapping import DISABLED, FOREIGN_DOMAIN, INVALID, NOT_MEMBER, MappingResult
from reconciler.recipient import Recipient
from reconciler.reconcile import read_directory
from reconciler.state import State, dump_state

FIXTURES = Path(__file__).parent / "fixtures" / "mapping"
BULK = 1600  # more members than AD returns in one range (1500)


def ad_ldif() -> str:
    """The AD export plus OU=Bulk with BULK users, all members of "All Staff"."""
    blocks = [(FIXTURES / "ad_export.ldif").read_text(encoding="utf-8").rstrip("\n")]
    blocks.append(
        "dn: OU=Bulk,DC=example,DC=com\nobjectClass: top\nobjectClass: organizationalUnit\nou: Bulk"
    )
    category = "CN=Person,CN=Schema,CN=Configuration,DC=example,DC=com"
    for n in range(1, BULK + 1):
        guid = base64.b64encode(uuid.UUID(int=10**6 + n).bytes_le).decode("ascii")
        blocks.append(
            f"dn: CN=bulk{n:04d},OU=Bulk,DC=example,DC=com\nobjectClass: top\nobjectClass: person\n"
            f"objectClass: organizationalPerson\nobjectClass: user\ncn: bulk{n:04d}\nsn: {n}\n"
            f"sAMAccountName: bulk{n:04d}\nuserAccountControl: 512\nobjectCategory: {category}\n"
            f"objectGUID:: {guid}\nmail: bulk{n:04d}@example.com\n"
            f"proxyAddresses: SMTP:bulk{n:04d}@example.com"
        )
    members = "".join(
        f"\nmember: CN=bulk{n:04d},OU=Bulk,DC=example,DC=com" for n in range(1, BULK + 1)
    )
    blocks.append(
        "dn: CN=All Staff,OU=Groups,DC=example,DC=com\nobjectClass: top\nobjectClass: group\n"
        "cn: All Staff\ngroupType: -2147483646\n"
        "objectCategory: CN=Group,CN=Schema,CN=Configuration,DC=example,DC=com" + members
    )
    return "\n\n".join(blocks) + "\n"


AD_SPEC = """\
domain: example.com
domain_aliases: [example.net, münchen.example]
directory:
  flavor: active_directory
{source}
users:
  # Exchange users without mail still have an "SMTP:" primary in proxyAddresses.
  filter: "(&(objectCategory=person)(objectClass=user)(|(mail=*)(proxyAddresses=*)))"
groups:
  only_members_of: [Mail Users]
distribution_lists: {{attribute: groupType, value: "8"}}
"""

OPENLDAP_SPEC = """\
domain: example.com
directory:
  flavor: openldap
{source}
users:
  username_attribute: uid
groups:
  filter: "(objectClass=posixGroup)"
  members_attribute: memberUid
  member_filter: "(|(&(objectClass=posixAccount)(uid={{member}}))\\
    (&(objectClass=posixGroup)(cn={{member}})))"
  only_members_of: [mailusers]
distribution_lists: {{attribute: objectClass, value: groupOfNames}}
"""


def for_slapd(ldif: str) -> str:
    """The export as slapd takes it: without the suffix entry (the server has it), and
    objectCategory as the short name AD resolves a filter's (objectCategory=person) to."""
    text = ldif.split("\n\n", 1)[1] if ldif.startswith("dn:") else ldif
    blocks = [b for b in re.split(r"\n\n+", text) if b.strip() and not b.lstrip().startswith("#")]
    blocks = [b for b in blocks if b.split("\n", 1)[0].lower() not in ("dn: dc=example,dc=com",)]
    joined = "\n\n".join(blocks) + "\n"
    return re.sub(
        r"objectCategory: CN=(\w+),CN=Schema,[^\n]*",
        lambda m: f"objectCategory: {m[1].lower()}",
        joined,
    )


def ldif_inventory(root: Path, spec: str, ldif: str) -> Path:
    inventory = root / "ldif" / "inventories"
    inventory.mkdir(parents=True)
    (inventory / "export.ldif").write_text(ldif, encoding="utf-8")
    source = "  ldif: export.ldif\n  base_dn: DC=example,DC=com"
    (inventory / "example.com.yaml").write_text(spec.format(source=source), encoding="utf-8")
    return inventory


def slapd_inventory(root: Path, spec: str, url: str) -> Path:
    inventory = root / "slapd" / "inventories"
    inventory.mkdir(parents=True)
    (root / "slapd" / "pw").write_text(READER_PASSWORD, encoding="utf-8")
    source = (
        f'  servers: [{url}]\n  tls: none\n  bind_dn: "{READER_DN}"\n'
        "  password: {file: ../pw}\n  page_size: 500"
    )
    (inventory / "example.com.yaml").write_text(spec.format(source=source), encoding="utf-8")
    return inventory


def read(inventory: Path) -> MappingResult:
    (spec,) = load_specs(inventory)
    return read_directory(spec)[1]


def state_text(result: MappingResult) -> str:
    return dump_state(State("example.com", result.recipients), "inventories/example.com.yaml")


@pytest.fixture(scope="module")
def ad_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    yield from _server(tmp_path_factory, "ad", ad_ldif())


@pytest.fixture(scope="module")
def openldap_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    ldif = (FIXTURES / "openldap_export.ldif").read_text(encoding="utf-8")
    yield from _server(tmp_path_factory, "openldap", ldif)


def _server(factory: pytest.TempPathFactory, name: str, ldif: str) -> Iterator[SlapdServer]:
    require_slapd_tools()
    server = SlapdServer(factory.mktemp(name), sizelimit="unlimited")
    server.load_ldif(for_slapd(ldif))
    with server:
        yield server


def guid(n: int) -> str:
    return str(uuid.UUID(int=n * 7919 + 12345))


def mailbox(name: str, id: str, username: str, status: str = "active") -> Recipient:
    return Recipient("mailbox", name, id, status, username=username)


def uid(n: int) -> str:
    """The entryUUIDs of the OpenLDAP export: users 1…, lists 101…"""
    return f"5b1e2a8e-{1111 if n < 100 else 2222}-4c3a-9a43-1d0a4e0a{n % 100:04d}"


AD_EXPECTED = {
    "alice.smith@example.com": mailbox("Alice Smith", guid(1), "asmith"),
    "alice@example.com": Recipient("alias", target="alice.smith@example.com"),
    "asmith@example.net": Recipient("alias", target="alice.smith@example.com"),
    "bob.jones@example.com": mailbox("Bob Jones", guid(2), "bjones"),
    "bob@example.com": Recipient("alias", target="bob.jones@example.com"),
    "carol.diaz@example.com": mailbox("Carol Diaz", guid(3), "cdiaz"),
    "carol@example.net": Recipient("alias", target="carol.diaz@example.com"),
    "dave.former@example.com": mailbox("Dave Former", guid(4), "dformer", "disabled"),
    "dave@example.com": Recipient("alias", target="dave.former@example.com"),
    "frank@example.com": mailbox("Frank Locked", guid(6), "flocked", "disabled"),
    "f@example.com": Recipient("alias", target="frank@example.com"),
    "mona@example.com": mailbox("Mona München", guid(7), "mmuenchen"),
    "mona@xn--mnchen-3ya.example": Recipient("alias", target="mona@example.com"),
    "sales@example.com": Recipient(
        "list", "Sales List", guid(103),
        members=("alice.smith@example.com", "bob.jones@example.com", "emea@example.com"),
    ),
    "vertrieb@example.net": Recipient("alias", target="sales@example.com"),
    "emea@example.com": Recipient(
        "list", "EMEA List", guid(104), members=("carol.diaz@example.com",)
    ),
}  # fmt: skip


def check_ad(result: MappingResult) -> None:
    small = {a: r for a, r in result.recipients.items() if not a.startswith("bulk")}
    assert small == AD_EXPECTED
    bulk = [a for a in result.recipients if a.startswith("bulk")]
    assert len(bulk) == BULK  # every member of the big nested group
    assert result.recipients["bulk1600@example.com"].username == "bulk1600"
    assert result.dropped[NOT_MEMBER] == 1  # Erin is in no group of Mail Users
    assert result.dropped[FOREIGN_DOMAIN] == 1  # asmith@contoso.onmicrosoft.com
    assert result.dropped[NO_MEMBER_ADDRESS] == 2  # the Printer Room, and Erin (not synced)
    # (slapd gives the DN's attribute types in lower case)
    assert [(v.dn.lower(), v.attribute, v.value) for v in result.invalid] == [
        ("cn=bob jones,ou=staff,dc=example,dc=com", "proxyAddresses", "b jones@example.com")
    ]
    assert result.conflict_list() == ()


OPENLDAP_EXPECTED = {
    "alice@example.com": mailbox("Alice Archer", uid(1), "alice"),
    "a.archer@example.com": Recipient("alias", target="alice@example.com"),
    "bob@example.com": mailbox("Bob Baker", uid(2), "bob"),
    "bob.baker@example.com": Recipient("alias", target="bob@example.com"),
    "carol@example.com": mailbox("Carol Carter", uid(3), "carol"),
    "dan@example.com": mailbox("Dan Temp", uid(4), "dan(temp)*"),
    "staff@example.com": Recipient(
        "list", "staff", uid(101),
        members=("alice@example.com", "bob@example.com", "dev@example.com"),
    ),
    "everyone@example.com": Recipient("alias", target="staff@example.com"),
    "dev@example.com": Recipient(
        "list", "devlist", uid(102),
        members=("bob@example.com", "dan@example.com"),
    ),
}  # fmt: skip


def check_openldap(result: MappingResult) -> None:
    assert result.recipients == OPENLDAP_EXPECTED
    assert result.dropped[NOT_MEMBER] == 1  # eve: in no posixGroup under mailusers
    assert result.dropped[FOREIGN_DOMAIN] == 1  # alice@example.org
    assert result.dropped[INVALID] == 1
    assert [(v.dn, v.attribute) for v in result.invalid] == [
        ("uid=bob,ou=people,dc=example,dc=com", "mailAlternateAddress")
    ]
    assert result.dropped[NO_MEMBER_ADDRESS] == 1  # eve in devlist
    assert result.dropped.get(DISABLED, 0) == 0


def test_active_directory_export_as_ldif(tmp_path: Path) -> None:
    check_ad(read(ldif_inventory(tmp_path, AD_SPEC, ad_ldif())))


def test_openldap_export_as_ldif(tmp_path: Path) -> None:
    ldif = (FIXTURES / "openldap_export.ldif").read_text(encoding="utf-8")
    check_openldap(read(ldif_inventory(tmp_path, OPENLDAP_SPEC, ldif)))


@pytest.mark.slapd
def test_active_directory_export_from_slapd_gives_the_same_state(
    ad_slapd: SlapdServer, tmp_path: Path
) -> None:
    from_server = read(slapd_inventory(tmp_path, AD_SPEC, ad_slapd.ldap_url))
    check_ad(from_server)
    from_ldif = read(ldif_inventory(tmp_path, AD_SPEC, ad_ldif()))
    assert state_text(from_server) == state_text(from_ldif)


@pytest.mark.slapd
def test_openldap_export_from_slapd_gives_the_same_state(
    openldap_slapd: SlapdServer, tmp_path: Path
) -> None:
    from_server = read(slapd_inventory(tmp_path, OPENLDAP_SPEC, openldap_slapd.ldap_url))
    check_openldap(from_server)
    ldif = (FIXTURES / "openldap_export.ldif").read_text(encoding="utf-8")
    assert state_text(from_server) == state_text(
        read(ldif_inventory(tmp_path, OPENLDAP_SPEC, ldif))
    )


@pytest.mark.slapd
@pytest.mark.parametrize("decoder", ["fast", "ldap3"])
def test_a_group_read_in_ranges_as_from_active_directory(
    ad_slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", decoder)
    # The same server behind a proxy that hands out "member" 1500 values at a time.
    from rangeproxy import RangeProxy

    with RangeProxy(("127.0.0.1", ad_slapd.port)) as proxy:
        from_ranges = read(slapd_inventory(tmp_path, AD_SPEC, proxy.url))
    # All Staff's "member;range=0-1499" in the groups search, then "member;range=1500-*".
    assert proxy.ranged == 2
    check_ad(from_ranges)
    from_ldif = read(ldif_inventory(tmp_path, AD_SPEC, ad_ldif()))
    assert state_text(from_ranges) == state_text(from_ldif)


@pytest.mark.slapd
@pytest.mark.parametrize("decoder", ["fast", "ldap3"])
def test_user_pages_with_ranged_entries_between_pages_without_ranges(
    ad_slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    # proxyAddresses handed out one value at a time, 50 users a page: the first pages have
    # entries whose rest is fetched by base searches on the same connection before the next
    # page is asked for; the bulk users' pages have no range and are read ahead. The proxy
    # matches each range request by its message ID, so an ID used twice would cut wrongly.
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", decoder)
    from rangeproxy import RangeProxy

    with RangeProxy(("127.0.0.1", ad_slapd.port), attribute="proxyAddresses", chunk=1) as proxy:
        inventory = slapd_inventory(tmp_path, AD_SPEC, proxy.url)
        spec = inventory / "example.com.yaml"
        spec.write_text(spec.read_text().replace("page_size: 500", "page_size: 50"))
        from_ranges = read(inventory)
    assert proxy.ranged > 10  # the first chunk and each further one, for several users
    check_ad(from_ranges)
    assert state_text(from_ranges) == state_text(read(ldif_inventory(tmp_path, AD_SPEC, ad_ldif())))
