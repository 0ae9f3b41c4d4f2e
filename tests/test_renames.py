"""Stable identity: a mailbox whose entry (same id) got a new primary address is one renaming
update in the plan, its text and its JSON, not an unrelated remove and add."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from gitrepo import (
    SPEC_YAML,
    User,
    change_directory,
    invoke,
    isolate_git,
    make_repo,
    state_path,
)

from reconciler.inventory import schema_dir
from reconciler.plan import Change, apply_changes, compute_changes
from reconciler.recipient import Recipient
from reconciler.renames import find_renames, fold_renames, with_recipient_defaults
from reconciler.state import load_state

ALICE = Recipient("mailbox", "Alice", "id-1", "active")
BOB = Recipient("mailbox", "Bob", "id-2", "active")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


def plan(existing: dict[str, Recipient], desired: dict[str, Recipient]) -> tuple[Change, ...]:
    renames = find_renames(existing, desired)
    return fold_renames(compute_changes(existing, desired), renames, existing)


def test_a_new_address_for_the_same_id_is_a_rename() -> None:
    existing = {"alice@example.com": ALICE, "bob@example.com": BOB}
    desired = {"alice.smith@example.com": ALICE, "bob@example.com": BOB}
    changes = plan(existing, desired)
    assert changes == (
        Change("update", "alice.smith@example.com", ALICE, ALICE, "alice@example.com"),
    )
    assert changes[0].describe() == (
        '~ alice@example.com → alice.smith@example.com  renamed, mailbox "Alice"'
    )
    assert changes[0].to_dict()["renamed_from"] == "alice@example.com"
    assert apply_changes(existing, changes) == desired


def test_a_rename_that_keeps_the_old_address_as_an_alias() -> None:
    existing = {"alice@example.com": ALICE}
    renamed = Recipient("mailbox", "Alice Smith", "id-1", "active")
    alias = Recipient("alias", target="alice.smith@example.com")
    desired = {"alice.smith@example.com": renamed, "alice@example.com": alias}
    changes = plan(existing, desired)
    assert [c.describe() for c in changes] == [
        '~ alice@example.com → alice.smith@example.com  renamed, mailbox "Alice Smith"; '
        'name: "Alice" → "Alice Smith"',
        "+ alice@example.com  alias → alice.smith@example.com",
    ]
    assert apply_changes(existing, changes) == desired


def test_ids_that_do_not_pair_one_to_one_are_no_rename() -> None:
    twin = Recipient("mailbox", "Twin", "id-1", "active")
    existing = {"alice@example.com": ALICE, "twin@example.com": twin}
    desired = {"alice.smith@example.com": ALICE}
    assert [c.action for c in plan(existing, desired)] == ["remove", "remove", "add"]
    assert find_renames({"a@example.com": ALICE}, {"b@x.com": ALICE, "c@x.com": ALICE}) == {}


def test_a_renamed_mailbox_keeps_its_fields_from_before() -> None:
    old = Recipient("mailbox", "Alice", "id-1", "active", privileges=("login",))
    desired = {"alice.smith@example.com": ALICE, "new@example.com": BOB}
    renames = {"alice.smith@example.com": "alice@example.com"}
    given = with_recipient_defaults(
        desired, {"alice@example.com": old}, renames, {"privileges": ["archive"]}
    )
    assert given["alice.smith@example.com"].privileges == ("login",)
    assert given["new@example.com"].privileges == ("archive",)


def test_a_changed_primary_address_through_plan_and_apply(tmp_path: Path) -> None:
    spec = SPEC_YAML.format(domain="example.com", base_dn="DC=example,DC=com")
    repo = make_repo(tmp_path, [User("alice", name="Alice"), User("bob", name="Bob")], spec=spec)
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    # The same entry (same objectGUID), with a new mail and the old one kept as an alias.
    moved = User("alice", name="Alice", mail="alice.smith@example.com", aliases=("alice",))
    change_directory(repo, [moved, User("bob", name="Bob")])

    text = invoke("plan", "--repo", str(repo))
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[1:3] == [
        '  ~ alice@example.com → alice.smith@example.com  renamed, mailbox "Alice"',
        "  + alice@example.com  alias → alice.smith@example.com",
    ]
    assert "1 to add, 1 to update, 0 to remove (2 → 3 recipients)" in text.stdout
    as_json = json.loads(invoke("plan", "--repo", str(repo), "--format", "json").stdout)
    schema = json.loads((schema_dir() / "plan.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(as_json)
    rename = as_json["domains"][0]["changes"][0]
    assert (rename["action"], rename["address"], rename["renamed_from"]) == (
        "update",
        "alice.smith@example.com",
        "alice@example.com",
    )

    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    state = load_state(state_path(repo), "example.com")
    assert state.recipients["alice.smith@example.com"].kind == "mailbox"
    assert state.recipients["alice@example.com"] == Recipient(
        "alias", target="alice.smith@example.com"
    )
    again = invoke("plan", "--repo", str(repo), "--detailed-exitcode")
    assert again.exit_code == 0, again.output
