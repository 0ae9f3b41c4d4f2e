"""The slapd test fixture itself: a real OpenLDAP reached with ldap3 over
plain LDAP, StartTLS and LDAPS, with the AD-like schema and size limits."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ldap3 import AUTO_BIND_TLS_BEFORE_BIND, BASE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPSocketOpenError, LDAPStartTLSError
from slapd import READER_DN, READER_PASSWORD, SlapdServer, make_ca

pytestmark = [
    pytest.mark.slapd,
    # ldap3 2.9.1 checks hostnames with ssl.match_hostname(), deprecated since 3.7.
    pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning"),
]

PEOPLE = "ou=People,dc=example,dc=com"


def tls_for(ca_file: Path) -> Tls:
    return Tls(ca_certs_file=str(ca_file), validate=ssl.CERT_REQUIRED)


@contextmanager
def bound(
    server: Server,
    user: str | None = None,
    password: str | None = None,
    auto_bind: bool | str = True,
) -> Iterator[Connection]:
    """An ldap3 connection that is closed afterwards. ``with Connection(...,
    auto_bind=True)`` is not: ldap3's __exit__ restores the state from before
    the with, i.e. leaves the socket open (a ResourceWarning, hence an error)."""
    conn = Connection(server, user, password, auto_bind=auto_bind)
    try:
        yield conn
    finally:
        conn.unbind()


def search_values(conn: Connection, search_filter: str, attribute: str) -> set[str]:
    assert conn.search("dc=example,dc=com", search_filter, SUBTREE, attributes=[attribute])
    # raw_attributes is always a list of bytes (attributes collapses SINGLE-VALUE ones).
    return {v.decode() for entry in conn.response for v in entry["raw_attributes"][attribute]}


def test_admin_simple_bind_over_ldap_finds_the_users(slapd: SlapdServer) -> None:
    with bound(Server(slapd.ldap_url), slapd.bind_dn, slapd.password) as conn:
        assert search_values(conn, "(objectClass=inetOrgPerson)", "mail") == {
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
        }


def test_reader_reads_entries_but_not_passwords(slapd: SlapdServer) -> None:
    with bound(Server(slapd.ldap_url), READER_DN, READER_PASSWORD) as conn:
        assert search_values(conn, "(uid=*)", "uid") == {"alice", "bob", "carol"}
        assert conn.search(READER_DN, "(objectClass=*)", BASE, attributes=["userPassword"])
        assert conn.response[0]["attributes"]["userPassword"] == []


def test_anonymous_sees_nothing(slapd: SlapdServer) -> None:
    with bound(Server(slapd.ldap_url)) as conn:
        conn.search("dc=example,dc=com", "(objectClass=*)", SUBTREE)
        assert conn.entries == []


def test_starttls_validates_against_the_test_ca(slapd: SlapdServer) -> None:
    server = Server(slapd.ldap_url, tls=tls_for(slapd.ca_file))
    with bound(server, slapd.bind_dn, slapd.password, AUTO_BIND_TLS_BEFORE_BIND) as conn:
        assert conn.tls_started
        assert conn.extend.standard.who_am_i() == f"dn:{slapd.bind_dn}"


def test_ldaps_validates_against_the_test_ca(slapd: SlapdServer) -> None:
    server = Server(slapd.ldaps_url, use_ssl=True, tls=tls_for(slapd.ca_file))
    with bound(server, READER_DN, READER_PASSWORD) as conn:
        assert conn.extend.standard.who_am_i() == f"dn:{READER_DN}"


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca(tmp_path_factory.mktemp("other-ca"), "other-ca")


def test_ldaps_with_another_ca_fails_validation(slapd: SlapdServer, other_ca: Path) -> None:
    server = Server(slapd.ldaps_url, use_ssl=True, tls=tls_for(other_ca), connect_timeout=5)
    with pytest.raises(LDAPSocketOpenError, match="CERTIFICATE_VERIFY_FAILED"), bound(server):
        pass


def test_starttls_with_another_ca_fails_validation(slapd: SlapdServer, other_ca: Path) -> None:
    server = Server(slapd.ldap_url, tls=tls_for(other_ca), connect_timeout=5)
    with (
        pytest.raises(LDAPStartTLSError, match="CERTIFICATE_VERIFY_FAILED"),
        bound(server, auto_bind=AUTO_BIND_TLS_BEFORE_BIND),
    ):
        pass


def test_ad_like_user_and_group(slapd: SlapdServer) -> None:
    with bound(Server(slapd.ldap_url), READER_DN, READER_PASSWORD) as conn:
        assert conn.search(
            PEOPLE,
            "(sAMAccountName=DAVE)",
            attributes=["proxyAddresses", "userAccountControl", "objectGUID", "userPrincipalName"],
        )
        [dave] = conn.response
        attrs = dave["attributes"]
        assert sorted(attrs["proxyAddresses"]) == [
            "SMTP:dave@example.com",
            "X500:/o=Example/ou=Exchange/cn=Recipients/cn=dave",
            "smtp:d.disabled@example.com",
        ]
        assert attrs["userAccountControl"] == 514
        assert dave["raw_attributes"]["objectGUID"] == [
            bytes.fromhex("112233445566778899aabbccddeeff00")
        ]
        # AD's bitwise matching rule (ACCOUNTDISABLE = 2) works in OpenLDAP too.
        disabled = "(userAccountControl:1.2.840.113556.1.4.803:=2)"
        assert search_values(conn, disabled, "sAMAccountName") == {"dave"}
        assert search_values(conn, "(proxyAddresses=smtp:DAVE@example.com)", "cn") == {
            "Dave Disabled"
        }
        assert search_values(conn, "(&(objectClass=group)(mail=staff@*))", "member") == {
            f"uid=alice,{PEOPLE}",
            f"uid=bob,{PEOPLE}",
        }


def user_ldif(count: int) -> str:
    return "".join(
        f"dn: uid=user{i:02},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: user{i:02}\n"
        f"cn: User {i}\nsn: {i}\nmail: user{i:02}@example.com\n\n"
        for i in range(count)
    )


SIZE_10 = "10"
SIZE_10_PAGED = "size.soft=10 size.hard=10 size.pr=5 size.prtotal=unlimited"


@pytest.fixture(scope="module")
def limited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlapdServer]:
    """A second server with 15 users and the size limit given as parameter."""
    server = SlapdServer(tmp_path_factory.mktemp("limited"), sizelimit=request.param)
    server.load_ldif(
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n" + user_ldif(15)
    )
    with server:
        yield server


@pytest.mark.parametrize("limited", [SIZE_10, SIZE_10_PAGED], indirect=True)
def test_size_limit_applies_to_a_normal_bind_user(limited: SlapdServer) -> None:
    with bound(Server(limited.ldap_url), READER_DN, READER_PASSWORD) as conn:
        conn.search(PEOPLE, "(objectClass=inetOrgPerson)", SUBTREE, attributes=["uid"])
        assert conn.result["result"] == 4
        assert conn.result["description"] == "sizeLimitExceeded"
        assert len(conn.entries) == 10


@pytest.mark.parametrize("limited", [SIZE_10], indirect=True)
def test_rootdn_bypasses_the_size_limit(limited: SlapdServer) -> None:
    with bound(Server(limited.ldap_url), limited.bind_dn, limited.password) as conn:
        assert conn.search(PEOPLE, "(objectClass=inetOrgPerson)", SUBTREE)
        assert len(conn.entries) == 15


@pytest.mark.parametrize("limited", [SIZE_10_PAGED], indirect=True)
def test_paged_search_reads_past_the_limit_with_prtotal_unlimited(limited: SlapdServer) -> None:
    with bound(Server(limited.ldap_url), READER_DN, READER_PASSWORD) as conn:
        entries = conn.extend.standard.paged_search(
            PEOPLE, "(objectClass=inetOrgPerson)", attributes=["uid"], paged_size=5, generator=False
        )
        assert len(entries) == 15


def test_ldapadd_restart_and_live_config_change(tmp_path: Path) -> None:
    with SlapdServer(tmp_path) as server:
        # AD-like user without inetOrgPerson: 'user' is AUXILIARY to person.
        server.ldapadd(
            "dn: cn=Erin,dc=example,dc=com\nobjectClass: organizationalPerson\n"
            "objectClass: user\ncn: Erin\nsn: E\nmail: erin@example.com\n"
            "userAccountControl: 512\n"
        )
        server.stop()
        server.start()
        with bound(Server(server.ldap_url), READER_DN, READER_PASSWORD) as conn:
            assert search_values(conn, "(userAccountControl=512)", "mail") == {"erin@example.com"}
            server.ldapmodify(
                "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\n"
                "replace: olcSizeLimit\nolcSizeLimit: 1\n",
                config=True,
            )
            conn.search("dc=example,dc=com", "(objectClass=*)", SUBTREE)
            assert conn.result["description"] == "sizeLimitExceeded"
