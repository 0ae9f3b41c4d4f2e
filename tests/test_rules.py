"""Mapping rules, default rules, user names and recipient_defaults: at load (file:line), in the
mapping, through `export --rules`, and over two applies (existing recipients keep theirs)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from gitrepo import (
    DEFAULTS_YAML,
    SPEC_YAML,
    User,
    change_directory,
    invoke,
    isolate_git,
    make_repo,
    spec_path,
    state_path,
    users,
)

from reconciler.directory import Entry
from reconciler.mapping import NO_ADDRESS, map_entries
from reconciler.recipient import Recipient
from reconciler.rules import RuleFormatError, compile_rule
from reconciler.spec import DomainSpec, Rule, build_spec

DN = "CN=Alice,OU=Staff,DC=example,DC=com"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


def spec(**keys: Any) -> DomainSpec:
    merged = {
        "domain": "example.com",
        "directory": {"flavor": "active_directory", "ldif": "x"},
        "users": {"id_attribute": None, "username_attribute": None},
        **keys,
    }
    return build_spec(merged, Path("x.yaml"), Path())


def entry(**attributes: list[str]) -> Entry:
    return Entry(DN, {k.lower(): list(v) for k, v in attributes.items()})


def rule(type: str, attribute: str, regex: str, format: str) -> dict[str, str]:
    return {"type": type, "attribute": attribute, "regex": regex, "format": format}


@pytest.mark.parametrize(
    ("regex", "format", "value", "address"),
    [
        ("^(.*)@", "{}@example.com", "alice@corp.example", "alice@example.com"),
        ("^(\\w+)\\.(\\w+)$", "{}-{}@example.com", "alice.smith", "alice-smith@example.com"),
        ("^(\\w+)\\.(\\w+)$", "{2}.{1}@example.com", "alice.smith", "smith.alice@example.com"),
        ("^(?P<first>\\w)\\w*\\.(?P<last>\\w+)$", "{first}{last}@example.com", "alice.smith",
         "asmith@example.com"),
        ("^(.*)$", "{{x}}{1}@example.com", "a", "{x}a@example.com"),
    ],
)  # fmt: skip
def test_a_rule_formats_the_groups_of_its_regex(
    regex: str, format: str, value: str, address: str
) -> None:
    compiled = compile_rule(Rule("alias", "uid", regex, format), 1)
    assert list(compiled.addresses(entry(uid=[value]))) == [address]


def test_a_value_the_regex_does_not_match_gives_nothing() -> None:
    compiled = compile_rule(Rule("alias", "uid", "^(.*)@corp$", "{}@example.com"), 1)
    assert list(compiled.addresses(entry(uid=["alice@other"], mail=["x"]))) == []


@pytest.mark.parametrize(
    ("regex", "format", "message"),
    [
        ("^.*$", "{}@x", "the regex has no group"),
        ("^(.*)$", "{2}@x", "uses group 2, but the regex has only 1"),
        ("^(.*)$", "{0}@x", "numbered from 1"),
        ("^(?P<a>.*)$", "{b}@x", "{b} is not a named group of the regex (named: a)"),
        ("^(.*)$", "{1:>3}@x", "may not have ':' or '!' parts"),
        ("^(.*)$", "{1@x", "write {{ or }} for a brace"),
        ("^(.*)$", "{}{}@x", "uses group 2, but the regex has only 1"),
    ],
)
def test_a_format_that_does_not_fit_its_regex_is_refused(
    regex: str, format: str, message: str
) -> None:
    with pytest.raises(RuleFormatError) as raised:
        compile_rule(Rule("alias", "uid", regex, format), 1)
    assert message in str(raised.value)


def test_a_mailbox_rule_gives_the_mailbox_only_when_there_is_no_mail() -> None:
    rules = [rule("mailbox", "userPrincipalName", "^(.*)@corp\\.example$", "{}@example.com")]
    with_rule = spec(rules=rules)
    upn = {"userPrincipalName": ["alice@corp.example"]}
    assert map_entries([entry(**upn)], with_rule).recipients == {
        "alice@example.com": Recipient("mailbox", id=DN, status="active")
    }
    both = map_entries([entry(mail=["a.smith@example.com"], **upn)], with_rule)
    assert set(both.recipients) == {"a.smith@example.com"}  # the mail attribute wins
    nothing = map_entries([entry(userPrincipalName=["alice@elsewhere"])], with_rule)
    assert (nothing.recipients, dict(nothing.dropped)) == ({}, {NO_ADDRESS: 1})


def test_alias_rules_add_aliases_and_default_rules_apply_after_the_domains() -> None:
    own = [rule("alias", "uid", "^(.*)$", "{1}@example.com")]
    defaults = [rule("alias", "sAMAccountName", "^(.*)$", "{1}.sam@example.com")]
    alice = entry(mail=["alice@example.com"], uid=["ali"], sAMAccountName=["asmith"])
    result = map_entries([alice], spec(rules=own, default_rules=defaults))
    target = Recipient("alias", target="alice@example.com")
    assert result.recipients == {
        "alice@example.com": Recipient("mailbox", id=DN, status="active"),
        "ali@example.com": target,
        "asmith.sam@example.com": target,
    }
    alone = spec(rules=own, default_rules=defaults, use_default_rules=False)
    assert [r.origin for r in alone.rules] == ["domain"]
    assert set(map_entries([alice], alone).recipients) == {"alice@example.com", "ali@example.com"}


def test_rule_attributes_are_requested_from_the_directory() -> None:
    with_rule = spec(rules=[rule("alias", "employeeID", "^(\\d+)$", "e{}@example.com")])
    assert "employeeID" in with_rule.users.attributes()


@pytest.mark.parametrize(
    ("local_part_only", "username"), [(False, "alice@corp.example"), (True, "alice")]
)
def test_the_username_is_kept_on_the_mailbox(local_part_only: bool, username: str) -> None:
    users_keys = {"username_attribute": "userPrincipalName", "local_part_only": local_part_only}
    mapped = map_entries(
        [entry(mail=["alice@example.com"], userPrincipalName=["alice@corp.example"])],
        spec(users={"id_attribute": None, **users_keys}),
    )
    assert mapped.recipients["alice@example.com"].username == username


# --- load-time checks, export, defaults over applies ------------------------------------------


def write_inventory(tmp_path: Path, defaults: str, domain: str) -> Path:
    inventory = tmp_path / "inventories"
    inventory.mkdir()
    (inventory / "defaults.yaml").write_text(defaults, encoding="utf-8")
    (inventory / "example.com.yaml").write_text(domain, encoding="utf-8")
    (inventory / "x.ldif").write_text("", encoding="utf-8")
    return inventory


DOMAIN_HEAD = "domain: example.com\ndirectory:\n  ldif: x.ldif\n"


def test_bad_rules_are_reported_at_their_file_and_line(tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path,
        DEFAULTS_YAML
        + 'default_rules:\n  - {type: alias, attribute: uid, regex: "(", format: x}\n',
        DOMAIN_HEAD + "rules:\n"
        '  - {type: alias, attribute: uid, regex: "^(.*)$", format: "{2}@example.com"}\n'
        '  - {type: mailbox, attribute: uid, regex: "^(.*)$", format: "{}@x", extra: 1}\n',
    )
    result = invoke("validate", "-i", str(inventory))
    assert result.exit_code == 1
    problems = result.stderr.splitlines()
    assert problems[0] == (
        f"{inventory}/example.com.yaml:6:70: unknown key 'extra'; allowed: attribute, format, "
        "regex, type (at rules/1/extra)"
    )
    without_extra = DOMAIN_HEAD + (
        'rules:\n  - {type: alias, attribute: uid, regex: "^(.*)$", format: "{2}@example.com"}\n'
    )
    (inventory / "example.com.yaml").write_text(without_extra, encoding="utf-8")
    problems = invoke("validate", "-i", str(inventory)).stderr.splitlines()
    assert problems[:2] == [
        f"{inventory}/example.com.yaml:5:60: format '{{2}}@example.com' uses group 2, but the "
        "regex has only 1 (at rules/0/format)",
        f"{inventory}/defaults.yaml:5:42: invalid regular expression '(': missing ), "
        "unterminated subpattern at position 0 (at default_rules/0/regex)",
    ]


def test_export_rules_prints_the_effective_rules_as_csv(tmp_path: Path) -> None:
    defaults = DEFAULTS_YAML + (
        "default_rules:\n"
        '  - {type: alias, attribute: sAMAccountName, regex: "^(.*)$", format: "{1}@example.com"}\n'
    )
    own = (
        'rules:\n  - {type: mailbox, attribute: uid, regex: "^(.+),x$", format: "{}@example.com"}\n'
    )
    inventory = write_inventory(tmp_path, defaults, DOMAIN_HEAD + own)
    result = invoke("export", "--rules", "example.com", "-i", str(inventory))
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["order", "origin", "type", "attribute", "regex", "format"],
        ["1", "domain", "mailbox", "uid", "^(.+),x$", "{}@example.com"],
        ["2", "default", "alias", "sAMAccountName", "^(.*)$", "{1}@example.com"],
    ]
    (inventory / "example.com.yaml").write_text(
        DOMAIN_HEAD + own + "use_default_rules: false\n", encoding="utf-8"
    )
    alone = invoke("export", "--rules", "example.com", "-i", str(inventory))
    assert alone.stdout.splitlines()[1:] == ['1,domain,mailbox,uid,"^(.+),x$",{}@example.com']


def test_export_without_what_to_export_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("export", "example.com", "-i", str(tmp_path))
    assert result.exit_code == 2
    assert "say what to export, one of: --format postfix|csv|json" in result.stderr


def test_export_rules_of_an_unknown_domain(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, DEFAULTS_YAML, DOMAIN_HEAD)
    result = invoke("export", "--rules", "example.org", "-i", str(inventory))
    assert result.exit_code == 1
    assert "no spec for example.org" in result.stderr


def state_lines(repo: Path) -> dict[str, dict[str, Any]]:
    lines = state_path(repo).read_text(encoding="utf-8").splitlines()
    return {
        line.split(": ", 1)[0].strip(): json.loads(line.split(": ", 1)[1])
        for line in lines
        if line.startswith("  ")
    }


def test_recipient_defaults_go_to_new_mailboxes_only(tmp_path: Path) -> None:
    base = SPEC_YAML.format(domain="example.com", base_dn="DC=example,DC=com")
    repo = make_repo(tmp_path, users(1), spec=base + "recipient_defaults: {privileges: [login]}\n")
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    assert state_lines(repo)["user01@example.com"]["privileges"] == ["login"]
    assert "privileges" not in state_lines(repo)["user01.alias@example.com"]

    # New defaults: the existing mailbox keeps what it was given, a new one gets the new ones.
    new_defaults = base + "recipient_defaults: {privileges: [login, archive]}\n"
    spec_path(repo).write_text(new_defaults, encoding="utf-8")
    change_directory(repo, [*users(1), User("newbie")])
    plan = invoke("plan", "--repo", str(repo))
    assert plan.exit_code == 0, plan.output
    assert "example.com: 1 to add, 0 to update, 0 to remove (2 → 3 recipients)" in plan.stdout
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    lines = state_lines(repo)
    assert lines["user01@example.com"]["privileges"] == ["login"]
    assert lines["newbie@example.com"]["privileges"] == ["login", "archive"]
    assert lines["newbie@example.com"]["username"] == "newbie"


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        pytest.param(
            'users:\n  disabled_filter: "(nsAccountLock=TRUE"\n',
            "5:20: invalid LDAP filter: expected ')' to close the filter opened at character 1",
            id="disabled-filter",
        ),
        pytest.param(
            'groups:\n  member_filter: "(uid=x)"\n',
            "5:18: member_filter must contain {member} (at groups/member_filter)",
            id="member-filter-without-member",
        ),
        pytest.param(
            'groups:\n  member_filter: "(uid={member}"\n',
            "5:18: invalid LDAP filter: expected ')'",
            id="member-filter-syntax",
        ),
        pytest.param(
            'groups:\n  member_filter: "(uid>={member})"\n',
            "5:18: {member} may stand only for a value of '='",
            id="member-filter-not-equality",
        ),
        pytest.param(
            'groups:\n  filter: "objectClass=group"\n',
            "5:11: invalid LDAP filter: ",
            id="groups-filter",
        ),
        pytest.param(
            "users:\n  disabled: suspend\n",
            "5:13: 'suspend' is not one of deactivate, exclude, include (at users/disabled)",
            id="disabled-mode",
        ),
        pytest.param(
            "distribution_lists: {attribute: objectClass}\n",
            "4:21: missing required key 'value' (at distribution_lists)",
            id="list-without-value",
        ),
    ],
)
def test_bad_mapping_keys_are_reported_at_their_line(
    tmp_path: Path, keys: str, problem: str
) -> None:
    inventory = write_inventory(tmp_path, DEFAULTS_YAML, DOMAIN_HEAD + keys)
    result = invoke("validate", "-i", str(inventory))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{inventory}/example.com.yaml:{problem}"), result.stderr
