"""Disabled accounts: users.disabled_filter says which entries are, users.disabled what they
become (deactivate | exclude | include); the same from an entry, an LDIF export and slapd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from slapd import READER_DN, READER_PASSWORD, SlapdServer

from reconciler.directory import Entry
from reconciler.disabled import is_disabled
from reconciler.inventory import load_specs
from reconciler.mapping import DISABLED, map_entries
from reconciler.recipient import Recipient
from reconciler.reconcile import read_directory
from reconciler.spec import DomainSpec, build_spec

AD_DISABLED = "(userAccountControl:1.2.840.113556.1.4.803:=2)"


def spec(flavor: str = "active_directory", **users: Any) -> DomainSpec:
    merged = {"domain": "example.com", "directory": {"flavor": flavor, "ldif": "x"}}
    return build_spec({**merged, "users": users}, Path("x.yaml"), Path())


def person(uac: str | None = None, **attributes: list[str]) -> Entry:
    values: dict[str, list[str | bytes]] = {"mail": ["dave@example.com"]}
    if uac is not None:
        values["useraccountcontrol"] = [uac]
    values.update({k.lower(): list(v) for k, v in attributes.items()})
    return Entry("CN=Dave,OU=Staff,DC=example,DC=com", values)


@pytest.mark.parametrize(
    ("uac", "disabled"),
    [
        ("512", False),  # NORMAL_ACCOUNT
        ("514", True),  # NORMAL_ACCOUNT | ACCOUNTDISABLE
        ("66050", True),  # … | DONT_EXPIRE_PASSWORD
        ("66048", False),
        (None, False),  # no userAccountControl: not known to be disabled
    ],
)
def test_active_directory_accounts_are_disabled_by_bit_2(uac: str | None, disabled: bool) -> None:
    users = spec().users
    assert users.disabled_filter == AD_DISABLED
    assert is_disabled(person(uac), users) is disabled


def test_other_flavors_have_no_disabled_accounts_unless_the_spec_says_how() -> None:
    locked = person(nsAccountLock=["TRUE"])
    assert spec("openldap").users.disabled_filter is None
    assert is_disabled(locked, spec("openldap").users) is False
    users = spec("openldap", disabled_filter="(nsAccountLock=TRUE)").users
    assert is_disabled(locked, users) is True
    assert is_disabled(person(nsAccountLock=["false"]), users) is False


def test_the_filter_attributes_are_requested_unless_the_flag_is_ignored() -> None:
    def requested(users: Any) -> set[str]:
        return {a.lower() for a in users.attributes()}

    assert "useraccountcontrol" in requested(spec().users)
    assert "useraccountcontrol" not in requested(spec(disabled="include").users)
    locked = spec("openldap", disabled_filter="(|(nsAccountLock=TRUE)(pwdAccountLockedTime=*))")
    assert {"nsaccountlock", "pwdaccountlockedtime"} <= requested(locked.users)


@pytest.mark.parametrize(
    ("mode", "status", "dropped"),
    [("deactivate", "disabled", {}), ("include", "active", {}), ("exclude", None, {DISABLED: 1})],
)
def test_what_a_disabled_account_becomes(
    mode: str, status: str | None, dropped: dict[str, int]
) -> None:
    entry = person("514", proxyAddresses=["smtp:d@example.com"])
    result = map_entries([entry], spec(disabled=mode, id_attribute=None))
    if status is None:
        assert result.recipients == {}
    else:
        mailbox = result.recipients["dave@example.com"]
        assert (mailbox.kind, mailbox.status) == ("mailbox", status)
        assert result.recipients["d@example.com"] == Recipient("alias", target="dave@example.com")
    assert dict(result.dropped) == dropped


# --- the same from slapd: dave (userAccountControl 514) in the session server -----------------


def slapd_spec(tmp_path: Path, server: SlapdServer, users: dict[str, Any]) -> DomainSpec:
    inventory = tmp_path / "inventories"
    inventory.mkdir(parents=True)
    (tmp_path / "pw").write_text(READER_PASSWORD, encoding="utf-8")
    text = (
        "domain: example.com\ndirectory:\n  flavor: openldap\n"
        f"  servers: [{server.ldap_url}]\n  tls: none\n  bind_dn: {json.dumps(READER_DN)}\n"
        "  password: {file: ../pw}\n"
        f"users: {json.dumps({'alias_attributes': ['proxyAddresses'], **users})}\n"
    )
    (inventory / "example.com.yaml").write_text(text, encoding="utf-8")
    (loaded,) = load_specs(inventory)
    return loaded


@pytest.mark.slapd
def test_slapd_disabled_accounts_deactivated_or_excluded(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    deactivate = slapd_spec(tmp_path / "a", slapd, {"disabled_filter": AD_DISABLED})
    _, result = read_directory(deactivate)
    assert result.recipients["dave@example.com"].status == "disabled"
    assert result.recipients["alice@example.com"].status == "active"

    exclude = slapd_spec(
        tmp_path / "b", slapd, {"disabled_filter": AD_DISABLED, "disabled": "exclude"}
    )
    _, result = read_directory(exclude)
    assert "dave@example.com" not in result.recipients
    assert "d.disabled@example.com" not in result.recipients
    assert result.dropped[DISABLED] == 1


def test_remembered_answers_stay_right_for_every_value_and_filter_shape() -> None:
    users = spec().users
    for _ in range(2):  # the second round is answered from what the first one remembered
        assert [is_disabled(person(v), users) for v in ("512", "514", "512", "66050")] == [
            False,
            True,
            False,
            True,
        ]
        assert is_disabled(person(None), users) is False
    either = spec("openldap", disabled_filter="(|(nsAccountLock=TRUE)(pwdAccountLockedTime=*))")
    assert is_disabled(person(pwdAccountLockedTime=["20260101000000Z"]), either.users) is True
    assert is_disabled(person(nsAccountLock=["true"]), either.users) is True
    assert is_disabled(person(nsAccountLock=["false"]), either.users) is False
    negated = spec("openldap", disabled_filter="(!(accountStatus=active))")
    assert is_disabled(person(), negated.users) is True  # no status at all: not active
    assert is_disabled(person(accountStatus=["active"]), negated.users) is False
