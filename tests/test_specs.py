"""Inventory checks: each spec mistake is reported as ``file:line:col: message`` at its place.

Each test writes a small inventory (defaults.yaml, <domain>.yaml files and the LDIF files they
name) into tmp_path and runs the same check as `reconciler validate`, and each runs twice: with
the schema checked in this process, and in a child process while this one gets on (as a plan
checks the specs).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler import inventory as inventory_module
from reconciler.errors import ConfigError, SpecErrors
from reconciler.inventory import check_inventory, load_specs
from reconciler.spec import FLAVOR_DEFAULTS, DirectorySpec, DomainSpec, UsersSpec

DEMO_INVENTORY = Path(__file__).parent.parent / "inventories"

GOOD = """\
domain: example.com
directory:
  flavor: active_directory
  ldif: data/example.ldif
"""


@pytest.fixture(autouse=True, params=["here", "in a child process"])
def schema_checked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """In the second run, the module's check_inventory and load_specs are given work to do
    meanwhile, so the schema is checked in a child process; a child answered every time."""
    if request.param == "here":
        yield
        return
    assert threading.active_count() == 1, "another thread runs: no child would be forked"
    verdicts: list[bool | None] = []
    ask_child = inventory_module.verdict_in_child

    def verdict_in_child(check: Callable[[], bool], meanwhile: Callable[[], object]) -> bool | None:
        verdicts.append(ask_child(check, meanwhile))
        return verdicts[-1]

    this_module = sys.modules[__name__]
    meanwhile = {"meanwhile": lambda: None}
    monkeypatch.setattr(
        this_module, "check_inventory", functools.partial(check_inventory, **meanwhile)
    )
    monkeypatch.setattr(this_module, "load_specs", functools.partial(load_specs, **meanwhile))
    monkeypatch.setattr(inventory_module, "verdict_in_child", verdict_in_child)
    yield
    assert None not in verdicts


def inventory(tmp_path: Path, files: dict[str, str]) -> Path:
    """An inventory directory with these YAML files and an empty data/example.ldif."""
    directory = tmp_path / "inventories"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "example.ldif").write_text("version: 1\n", encoding="utf-8")
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    """Every problem reported, with the inventory directory left out of the file names."""
    directory = inventory(tmp_path, files)
    _, found = check_inventory(directory)
    return [str(p).replace(f"{directory}/", "") for p in found]


def only_problem(tmp_path: Path, name: str, text: str) -> str:
    [problem] = problems(tmp_path, {name: text})
    return problem


# --- one mistake each, at its line and column ---------------------------------------------------


def test_a_string_where_a_list_is_expected(tmp_path: Path) -> None:
    text = GOOD + "users:\n  alias_attributes: proxyAddresses\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:21: expected a list, got a string ('proxyAddresses') "
        "(at users/alias_attributes)"
    )


def test_a_number_where_a_string_is_expected(tmp_path: Path) -> None:
    text = GOOD + "users:\n  filter: 42\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:11: expected a string, got an integer (42) (at users/filter)"
    )


def test_an_unknown_key_with_a_did_you_mean_hint(tmp_path: Path) -> None:
    text = GOOD + "exlude:\n  - test-*@*\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:5:1: unknown key 'exlude'; did you mean 'exclude'? (at exlude)"
    )


def test_an_unknown_nested_key_points_at_the_key(tmp_path: Path) -> None:
    text = GOOD + "users:\n  mail_atribute: mail\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:3: unknown key 'mail_atribute'; did you mean 'mail_attribute'? "
        "(at users/mail_atribute)"
    )


def test_an_unknown_key_like_nothing_lists_the_allowed_keys(tmp_path: Path) -> None:
    text = GOOD + "zzz: 1\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:5:1: unknown key 'zzz'; allowed: auth, default_rules, directory, "
        "distribution_lists, domain, domain_aliases, exclude, groups, notify, policy, protected, "
        "recipient_defaults, rules, schedule, use_default_rules, users (at zzz)"
    )


def test_a_missing_domain_points_at_the_start_of_the_file(tmp_path: Path) -> None:
    text = "# no domain here\ndirectory:\n  ldif: data/example.ldif\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:1:1: missing required key 'domain'"
    )


def test_a_directory_without_a_source_points_at_its_mapping(tmp_path: Path) -> None:
    text = "domain: example.com\ndirectory:\n  flavor: openldap\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:3:3: directory needs 'servers' (LDAP URLs) or 'ldif' (an export)"
        " (at directory)"
    )


def test_a_filter_that_is_not_rfc_4515(tmp_path: Path) -> None:
    text = GOOD + 'users:\n  filter: "(&(objectClass=user)(mail=*)"\n'
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:11: invalid LDAP filter: expected ')' to close the filter opened "
        "at character 1, found end of filter at character 29 of '(&(objectClass=user)(mail=*)' "
        "(at users/filter)"
    )


def test_a_filter_with_a_bad_character(tmp_path: Path) -> None:
    text = GOOD + 'users:\n  filter: "mail=*"\n'
    [problem] = problems(tmp_path, {"example.com.yaml": text})
    assert problem.startswith("example.com.yaml:6:11: invalid LDAP filter: ")
    assert problem.endswith("at character 1 of 'mail=*' (at users/filter)")


def test_a_bad_attribute_name(tmp_path: Path) -> None:
    text = GOOD + "users:\n  mail_attribute: mail address\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:19: 'mail address' is not an LDAP attribute name "
        "(at users/mail_attribute)"
    )


def test_a_bad_attribute_name_in_a_list(tmp_path: Path) -> None:
    text = GOOD + "users:\n  alias_attributes: [proxyAddresses, _secret]\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:38: '_secret' is not an LDAP attribute name "
        "(at users/alias_attributes/1)"
    )


def test_a_bad_domain_name(tmp_path: Path) -> None:
    text = GOOD.replace("example.com", "bad_domain")
    assert only_problem(tmp_path, "bad_domain.yaml", text) == (
        "bad_domain.yaml:1:9: 'bad_domain' is not a valid domain name "
        "(expected something like example.com) (at domain)"
    )


def test_bad_domain_aliases(tmp_path: Path) -> None:
    text = GOOD + "domain_aliases: [example.net, -bad-.com, Example.COM]\n"
    assert problems(tmp_path, {"example.com.yaml": text}) == [
        "example.com.yaml:5:31: '-bad-.com' is not a valid domain name "
        "(expected something like example.com) (at domain_aliases/1)",
        "example.com.yaml:5:42: 'Example.COM' is the domain itself (at domain_aliases/2)",
    ]


def test_a_file_name_that_does_not_match_the_domain(tmp_path: Path) -> None:
    assert only_problem(tmp_path, "example.org.yaml", GOOD) == (
        "example.org.yaml:1:9: domain 'example.com' does not match the file name; "
        "rename the file to example.com.yaml (at domain)"
    )


def test_the_file_name_is_compared_case_insensitively(tmp_path: Path) -> None:
    directory = inventory(tmp_path, {"Example.COM.yaml": GOOD})
    specs, found = check_inventory(directory)
    assert found == []
    assert [s.domain for s in specs] == ["example.com"]


def test_an_enum_typo_suggests_the_right_value(tmp_path: Path) -> None:
    text = GOOD.replace("flavor: active_directory", "flavor: activedirectory")
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:3:11: 'activedirectory' is not one of active_directory, openldap, "
        "generic; did you mean 'active_directory'? (at directory/flavor)"
    )


def test_a_duplicate_key(tmp_path: Path) -> None:
    text = GOOD + "domain: example.net\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        'example.com.yaml:5:1: found duplicate key "domain" with value "example.net" '
        '(original value: "example.com")'
    )


def test_a_yaml_syntax_error(tmp_path: Path) -> None:
    text = GOOD + "exclude: [test-*@*\nusers: {}\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:6: expected ',' or ']', but got ':'"
    )


def test_a_bad_indentation(tmp_path: Path) -> None:
    text = GOOD + " users: {}\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:5:2: expected <block end>, but found '<block mapping start>'"
    )


def test_a_missing_ldif_file(tmp_path: Path) -> None:
    directory = inventory(tmp_path, {"example.com.yaml": GOOD.replace("example.ldif", "gone.ldif")})
    _, found = check_inventory(directory)
    assert [str(p) for p in found] == [
        f"{directory}/example.com.yaml:4:9: LDIF file {directory}/data/gone.ldif does not exist "
        "(at directory/ldif)"
    ]


def test_a_spec_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert only_problem(tmp_path, "example.com.yaml", "- domain: example.com\n") == (
        "example.com.yaml:1:1: expected a mapping of spec keys"
    )


# --- defaults.yaml ------------------------------------------------------------------------------


def test_a_mistake_in_the_defaults_is_reported_once_at_its_line_in_the_defaults(
    tmp_path: Path,
) -> None:
    defaults = (
        "# shared by every domain\ndirectory:\n  flavor: openldap\nusers:\n  name_atribute: cn\n"
    )
    assert problems(
        tmp_path,
        {
            "defaults.yaml": defaults,
            "example.com.yaml": GOOD,
            "example.net.yaml": GOOD.replace("example.com", "example.net"),
        },
    ) == [
        "defaults.yaml:5:3: unknown key 'name_atribute'; did you mean 'name_attribute'? "
        "(at users/name_atribute)"
    ]


def test_a_bad_filter_in_the_defaults_is_reported_at_the_defaults_line(tmp_path: Path) -> None:
    defaults = 'directory:\n  flavor: generic\nusers:\n  filter: "(mail=*"\n'
    assert problems(tmp_path, {"defaults.yaml": defaults, "example.com.yaml": GOOD}) == [
        "defaults.yaml:4:11: invalid LDAP filter: expected ')' to close the filter opened at "
        "character 1, found end of filter at character 8 of '(mail=*' (at users/filter)"
    ]


def test_a_value_the_spec_overrides_is_reported_in_the_spec_not_the_defaults(
    tmp_path: Path,
) -> None:
    defaults = "users:\n  mail_attribute: mail\n"
    spec = GOOD + "users:\n  mail_attribute: 1mail\n"
    assert problems(tmp_path, {"defaults.yaml": defaults, "example.com.yaml": spec}) == [
        "example.com.yaml:6:19: '1mail' is not an LDAP attribute name (at users/mail_attribute)"
    ]


def test_a_required_key_may_come_from_the_defaults(tmp_path: Path) -> None:
    defaults = "directory:\n  ldif: data/example.ldif\n"
    directory = inventory(
        tmp_path, {"defaults.yaml": defaults, "example.com.yaml": "domain: example.com\n"}
    )
    specs, found = check_inventory(directory)
    assert found == []
    assert specs[0].directory.ldif == directory / "data" / "example.ldif"


def test_the_defaults_alone_need_no_domain(tmp_path: Path) -> None:
    defaults = "directory:\n  flavor: openldap\n"
    assert problems(tmp_path, {"defaults.yaml": defaults, "example.com.yaml": GOOD}) == []


# --- every problem at once ----------------------------------------------------------------------


def test_several_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {
            "a.example.com.yaml": (
                "domain: a.example.com\n"
                "directory:\n"
                "  ldif: data/example.ldif\n"
                "users:\n"
                "  alias_attributes: proxyAddresses\n"
                "exlude: [x]\n"
            ),
            "b.example.com.yaml": (
                "domain: b.example.com\n"
                "directory:\n"
                "  flavor: activedirectory\n"
                "  ldif: data/b.ldif\n"
            ),
            "c.example.com.yaml": GOOD + "domain: c.example.com\n",
            "d.example.com.yaml": (
                "domain: d.example.com\n"
                "directory:\n"
                "  ldif: data/missing.ldif\n"
                "users:\n"
                '  filter: "(mail=*"\n'
            ),
            "example.com.yaml": GOOD,  # valid
        },
    )
    assert found == [
        "a.example.com.yaml:6:1: unknown key 'exlude'; did you mean 'exclude'? (at exlude)",
        "a.example.com.yaml:5:21: expected a list, got a string ('proxyAddresses') "
        "(at users/alias_attributes)",
        "b.example.com.yaml:3:11: 'activedirectory' is not one of active_directory, openldap, "
        "generic; did you mean 'active_directory'? (at directory/flavor)",
        'c.example.com.yaml:5:1: found duplicate key "domain" with value "c.example.com" '
        '(original value: "example.com")',
        "d.example.com.yaml:5:11: invalid LDAP filter: expected ')' to close the filter opened "
        "at character 1, found end of filter at character 8 of '(mail=*' (at users/filter)",
        "d.example.com.yaml:3:9: LDIF file data/missing.ldif does not exist (at directory/ldif)",
    ]


def test_load_specs_raises_every_problem_together(tmp_path: Path) -> None:
    directory = inventory(
        tmp_path,
        {
            "example.com.yaml": GOOD + "exlude: []\n",
            "example.net.yaml": GOOD,  # wrong domain for the file name
        },
    )
    with pytest.raises(SpecErrors) as caught:
        load_specs(directory)
    assert caught.value.problems == [
        f"{directory}/example.com.yaml:5:1: unknown key 'exlude'; did you mean 'exclude'? "
        "(at exlude)",
        f"{directory}/example.net.yaml:1:9: domain 'example.com' does not match the file name; "
        "rename the file to example.com.yaml (at domain)",
    ]
    assert caught.value.message.startswith("2 problems in the specs:\n")


def test_load_specs_of_named_domains_checks_only_those(tmp_path: Path) -> None:
    directory = inventory(
        tmp_path,
        {"example.com.yaml": GOOD, "broken.example.yaml": "domain: [\n"},
    )
    assert [s.domain for s in load_specs(directory, ["EXAMPLE.com"])] == ["example.com"]
    with pytest.raises(ConfigError, match=r"^no spec for example\.org in "):
        load_specs(directory, ["example.org"])


def test_an_inventory_without_specs_is_an_error(tmp_path: Path) -> None:
    directory = inventory(tmp_path, {"defaults.yaml": "directory:\n  flavor: generic\n"})
    with pytest.raises(ConfigError, match=r"^no domain specs \(\*\.yaml\) in "):
        check_inventory(directory)
    with pytest.raises(ConfigError, match=r"inventory directory .*nowhere does not exist"):
        check_inventory(tmp_path / "nowhere")


# --- the built spec: merge and flavor defaults --------------------------------------------------


def test_defaults_deep_merge_mappings_merge_and_lists_replace(tmp_path: Path) -> None:
    defaults = """\
directory:
  flavor: openldap
  base_dn: dc=example,dc=com
users:
  name_attribute: displayName
  alias_attributes: [mailAlternateAddress, mailLocalAddress]
exclude: [root@*, postmaster@*]
domain_aliases: [example.net]
"""
    spec = """\
domain: Example.COM
directory:
  ldif: data/example.ldif
users:
  alias_attributes: [proxyAddresses]
exclude: [Test-*@*]
"""
    directory = inventory(tmp_path, {"defaults.yaml": defaults, "example.com.yaml": spec})
    [built] = load_specs(directory)
    assert built == DomainSpec(
        domain="example.com",
        domain_aliases=("example.net",),  # from the defaults: the spec has none
        directory=DirectorySpec(
            flavor="openldap",  # the defaults' directory mapping merged with the spec's
            ldif=directory / "data" / "example.ldif",
            base_dn="dc=example,dc=com",
        ),
        users=UsersSpec(
            filter="(&(objectClass=inetOrgPerson)(mail=*))",  # openldap flavor default
            mail_attribute="mail",
            alias_attributes=("proxyAddresses",),  # the spec's list replaces the defaults'
            name_attribute="displayName",  # the defaults' users keys are kept
            id_attribute="entryUUID",
        ),
        exclude=("test-*@*",),  # replaced, and lower-cased for matching
        source=directory / "example.com.yaml",
        digest=built.digest,
    )
    assert len(built.digest) == 64
    assert built.managed_domains == frozenset({"example.com", "example.net"})


def test_the_digest_changes_with_the_effective_spec(tmp_path: Path) -> None:
    first = load_specs(inventory(tmp_path / "1", {"example.com.yaml": GOOD}))[0]
    same = load_specs(inventory(tmp_path / "2", {"example.com.yaml": "# comment\n" + GOOD}))[0]
    other = load_specs(inventory(tmp_path / "3", {"example.com.yaml": GOOD + "exclude: [x]\n"}))[0]
    assert first.digest == same.digest
    assert first.digest != other.digest


@pytest.mark.parametrize("flavor", ["active_directory", "openldap", "generic"])
def test_the_flavor_gives_the_users_defaults(tmp_path: Path, flavor: str) -> None:
    text = GOOD.replace("active_directory", flavor)
    [built] = load_specs(inventory(tmp_path, {"example.com.yaml": text}))
    defaults = FLAVOR_DEFAULTS[flavor]
    assert built.directory.flavor == flavor
    assert built.users == UsersSpec(
        filter=defaults["filter"],
        mail_attribute=defaults["mail_attribute"],
        alias_attributes=tuple(defaults["alias_attributes"]),
        name_attribute=defaults["name_attribute"],
        id_attribute=defaults["id_attribute"],
        username_attribute=defaults["username_attribute"],
        disabled_filter=defaults["disabled_filter"],
    )


def test_the_flavor_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    text = GOOD.replace("  flavor: active_directory\n", "")
    [generic] = load_specs(inventory(tmp_path / "g", {"example.com.yaml": text}))
    [ad] = load_specs(inventory(tmp_path / "ad", {"example.com.yaml": GOOD}))
    assert generic.directory.flavor == "generic"  # no flavor anywhere
    assert generic.users == UsersSpec("(mail=*)", "mail", (), "cn", None)
    assert ad.users == UsersSpec(
        "(&(objectCategory=person)(objectClass=user)(mail=*))",
        "mail",
        ("proxyAddresses",),
        "displayName",
        "objectGUID",
        username_attribute="sAMAccountName",
        disabled="deactivate",
        disabled_filter="(userAccountControl:1.2.840.113556.1.4.803:=2)",
    )


def test_a_spec_key_overrides_a_flavor_default(tmp_path: Path) -> None:
    text = GOOD + "users:\n  id_attribute: objectSid\n  alias_attributes: []\n"
    [built] = load_specs(inventory(tmp_path, {"example.com.yaml": text}))
    assert built.users.id_attribute == "objectSid"
    assert built.users.alias_attributes == ()
    assert built.users.filter == "(&(objectCategory=person)(objectClass=user)(mail=*))"


# --- the demo -----------------------------------------------------------------------------------


def test_the_demo_inventory_is_valid() -> None:
    specs, found = check_inventory(DEMO_INVENTORY)
    assert found == []
    [demo] = specs
    assert demo.domain == "example.com"
    assert demo.domain_aliases == ("example.net",)
    assert demo.directory == DirectorySpec(
        flavor="active_directory",
        ldif=DEMO_INVENTORY / "data" / "example.com.ldif",
        base_dn="DC=example,DC=com",
    )
    assert demo.users.alias_attributes == ("proxyAddresses",)
    assert demo.exclude == ("forgetme[0-9]@*", "test-*@*")


# --- live directory servers -----------------------------------------------------------------------

SERVER_SPEC = """\
domain: example.com
directory:
  flavor: openldap
  servers: [ldap://dc1.example.com, "ldap://dc2.example.com:3890"]
  bind_dn: cn=sync,dc=example,dc=com
  password: {env: SYNC_PASSWORD}
"""


def test_a_server_spec_is_valid_and_secure_by_default(tmp_path: Path) -> None:
    directory = inventory(tmp_path, {"example.com.yaml": SERVER_SPEC})
    (spec,) = load_specs(directory)
    assert spec.directory.servers == ("ldap://dc1.example.com", "ldap://dc2.example.com:3890")
    assert spec.directory.tls == "starttls"
    assert spec.directory.verify_certificate is True
    assert spec.directory.password == {"env": "SYNC_PASSWORD"}
    assert (spec.directory.timeout, spec.directory.page_size) == (10.0, 500)


def test_ldaps_urls_imply_ldaps(tmp_path: Path) -> None:
    text = SERVER_SPEC.replace("ldap://", "ldaps://")
    (spec,) = load_specs(inventory(tmp_path, {"example.com.yaml": text}))
    assert spec.directory.tls == "ldaps"


def test_an_inline_password_is_rejected(tmp_path: Path) -> None:
    text = SERVER_SPEC.replace("{env: SYNC_PASSWORD}", "hunter2")
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:13: inline passwords are not allowed: write {env: VAR} or"
        " {file: PATH} (at directory/password)"
    )


def test_a_password_reference_names_env_or_file_only(tmp_path: Path) -> None:
    text = SERVER_SPEC.replace("{env: SYNC_PASSWORD}", "{value: hunter2}")
    assert "unknown key 'value'" in only_problem(tmp_path, "example.com.yaml", text)


def test_both_ldif_and_servers_is_a_problem(tmp_path: Path) -> None:
    files = {"example.com.yaml": SERVER_SPEC + "  ldif: x.ldif\n", "x.ldif": "version: 1\n"}
    assert problems(tmp_path, files) == [
        "example.com.yaml:7:9: directory has both 'ldif' and 'servers'; keep one of them"
        " (at directory/ldif)"
    ]


def test_starttls_with_an_ldaps_url_is_a_problem(tmp_path: Path) -> None:
    text = SERVER_SPEC.replace("ldap://dc1", "ldaps://dc1") + "  tls: starttls\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:7:8: tls: starttls does not go with ldaps://dc1.example.com"
        " (ldaps:// is TLS already) (at directory/tls)"
    )


def test_a_bind_dn_without_a_password_is_a_problem(tmp_path: Path) -> None:
    text = SERVER_SPEC.replace("  password: {env: SYNC_PASSWORD}\n", "")
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:5:12: bind_dn needs a password: {env: VAR} or {file: PATH}"
        " (at directory/bind_dn)"
    )


def test_a_missing_ca_file_and_a_bad_url_are_problems(tmp_path: Path) -> None:
    text = SERVER_SPEC.replace("ldap://dc1.example.com", "http://dc1") + "  ca_file: ca.pem\n"
    found = problems(tmp_path, {"example.com.yaml": text})
    assert len(found) == 1
    assert found[0] == (
        "example.com.yaml:4:13: 'http://dc1' is not an ldap://host[:port] or"
        " ldaps://host[:port] URL (at directory/servers/0)"
    )
