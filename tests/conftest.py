"""Shared pytest fixtures.

``slapd``: one real OpenLDAP server for the whole session (see tests/slapd.py
for what it guarantees: suffix, rootdn, the non-root READER_DN, AD-like schema,
TLS). Tests must not modify SAMPLE_LDIF's entries; a test that needs to write
or to change limits starts its own SlapdServer in tmp_path (about 0.3 s).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from slapd import SlapdServer, find_tool

# ldap3 2.9.1 imports pyasn1 names that pyasn1 >= 0.6.1 deprecates, and
# filterwarnings = error turns that into a collection error in every module
# importing ldap3. Import it once here with that warning ignored (sys.modules
# keeps it). Better still: an ignore entry in pyproject's filterwarnings.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ldap3")
    import ldap3  # noqa: F401

# Fixture data later tests assert against: 3 plain inetOrgPerson users, one
# AD-like disabled user (userAccountControl 514 = NORMAL_ACCOUNT | ACCOUNTDISABLE)
# and one AD-like group.
SAMPLE_LDIF = """\
dn: ou=People,dc=example,dc=com
objectClass: organizationalUnit
ou: People

dn: ou=Groups,dc=example,dc=com
objectClass: organizationalUnit
ou: Groups

dn: uid=alice,ou=People,dc=example,dc=com
objectClass: inetOrgPerson
uid: alice
cn: Alice Archer
sn: Archer
mail: alice@example.com

dn: uid=bob,ou=People,dc=example,dc=com
objectClass: inetOrgPerson
uid: bob
cn: Bob Baker
sn: Baker
mail: bob@example.com

dn: uid=carol,ou=People,dc=example,dc=com
objectClass: inetOrgPerson
uid: carol
cn: Carol Carter
sn: Carter
mail: carol@example.com

dn: cn=Dave Disabled,ou=People,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: user
cn: Dave Disabled
sn: Disabled
mail: dave@example.com
sAMAccountName: dave
userPrincipalName: dave@example.com
userAccountControl: 514
objectCategory: person
objectGUID:: ESIzRFVmd4iZqrvM3e7/AA==
proxyAddresses: SMTP:dave@example.com
proxyAddresses: smtp:d.disabled@example.com
proxyAddresses: X500:/o=Example/ou=Exchange/cn=Recipients/cn=dave

dn: cn=Staff,ou=Groups,dc=example,dc=com
objectClass: group
cn: Staff
description: everyone on staff
mail: staff@example.com
sAMAccountName: staff
objectCategory: group
proxyAddresses: SMTP:staff@example.com
member: uid=alice,ou=People,dc=example,dc=com
member: uid=bob,ou=People,dc=example,dc=com
"""


def require_slapd_tools() -> None:
    """Fail (never skip) when the OpenLDAP tools are missing: a skipped
    integration suite would look green without testing anything."""
    try:
        for tool in ("slapd", "slapadd", "ldapmodify", "openssl"):
            find_tool(tool)
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """A started slapd holding SAMPLE_LDIF; stopped at the end of the session."""
    require_slapd_tools()
    server = SlapdServer(tmp_path_factory.mktemp("slapd"))
    server.load_ldif(SAMPLE_LDIF)  # slapadd while stopped: fastest way in
    with server:
        yield server
