"""The change model, plans and their renderings: pure functions on literal values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import any_recipient

from reconciler.mapping import Conflict
from reconciler.plan import (
    Change,
    DomainPlan,
    apply_changes,
    compute_changes,
    summarize,
)
from reconciler.printable import shown
from reconciler.recipient import Recipient
from reconciler.render import commit_message, render_json, render_text
from reconciler.state import (
    Hold,
    State,
    StoredRecipients,
    dump_state,
    iter_state_text,
    parse_state,
)

SCHEMAS = Path(__file__).parent.parent / "schemas"

ALICE = Recipient(kind="mailbox", name="Alice Smith", id="g-1", status="active")
ALICE_RENAMED = Recipient(kind="mailbox", name="Alice Jones", id="g-1", status="active")
BOB = Recipient(kind="mailbox", name="Bob", id="g-2", status="active")
CAROL = Recipient(kind="mailbox", name="Carol", id="g-3", status="active")
A_SMITH = Recipient(kind="alias", target="alice@example.com")

EXISTING = {"alice@example.com": ALICE, "a.smith@example.com": A_SMITH, "bob@example.com": BOB}
DESIRED = {"alice@example.com": ALICE_RENAMED, "carol@example.com": CAROL}


def _plan(**overrides: object) -> DomainPlan:
    fields: dict[str, object] = {
        "domain": "example.com",
        "changes": compute_changes(EXISTING, DESIRED),
        "existing_count": len(EXISTING),
        "desired_count": len(DESIRED),
        "source": "LDIF x.ldif: 2 matching entries",
    }
    fields.update(overrides)
    return DomainPlan(**fields)  # type: ignore[arg-type]


def test_changes_come_removals_first_then_updates_then_adds_each_sorted() -> None:
    changes = compute_changes(EXISTING, DESIRED)
    assert [(c.action, c.address) for c in changes] == [
        ("remove", "a.smith@example.com"),
        ("remove", "bob@example.com"),
        ("update", "alice@example.com"),
        ("add", "carol@example.com"),
    ]


def test_equal_recipients_make_no_change() -> None:
    assert compute_changes(EXISTING, dict(EXISTING)) == ()


def test_applying_the_changes_gives_exactly_the_desired_recipients() -> None:
    assert apply_changes(EXISTING, compute_changes(EXISTING, DESIRED)) == DESIRED


def test_each_change_describes_itself() -> None:
    lines = [c.describe() for c in compute_changes(EXISTING, DESIRED)]
    assert lines == [
        "- a.smith@example.com  alias → alice@example.com",
        '- bob@example.com  mailbox "Bob"',
        '~ alice@example.com  name: "Alice Smith" → "Alice Jones"',
        '+ carol@example.com  mailbox "Carol"',
    ]


def test_update_lists_every_changed_field_with_old_and_new_values() -> None:
    old = Recipient(kind="mailbox", name="A", id="1", status="active")
    new = Recipient(kind="mailbox", name="B", id="1", status="disabled")
    (change,) = compute_changes({"a@x.org": old}, {"a@x.org": new})
    assert change.field_changes() == [("name", "A", "B"), ("status", "active", "disabled")]


def test_summary_counts_and_the_size_after_apply() -> None:
    assert _plan().summary() == (
        "example.com: 1 to add, 1 to update, 2 to remove (3 → 2 recipients)"
    )
    in_sync = _plan(changes=())
    assert in_sync.summary() == "example.com: in sync (3 recipients)"
    assert not in_sync.has_changes


def test_digest_is_stable_and_changes_with_the_changes() -> None:
    assert _plan().digest() == _plan().digest()
    assert _plan().digest() != _plan(changes=compute_changes(EXISTING, {})).digest()


def test_empty_directory_read_is_refused_when_the_state_has_recipients() -> None:
    refusals = _plan(desired_count=0).refusals()
    assert len(refusals) == 1
    assert "no recipients while the state has 3" in refusals[0]
    # A domain never synced may well start empty.
    assert _plan(desired_count=0, existing_count=0).refusals() == []


def test_hold_and_conflicts_are_refusals_that_say_the_way_out() -> None:
    plan = _plan(
        hold=Hold(reason="rolled back to abc", since="2026-01-01T00:00:00Z"),
        conflicts=(Conflict("x@example.com", ("cn=a,dc=x", "cn=b,dc=x")),),
    )
    reasons = plan.refusals()
    assert reasons[0] == "conflict: x@example.com is claimed by 2 entries: cn=a,dc=x; cn=b,dc=x"
    assert "on hold since 2026-01-01T00:00:00Z: rolled back to abc" in reasons[1]
    assert "reconciler resume example.com" in reasons[1]


def test_text_rendering_is_grouped_by_domain_with_a_summary() -> None:
    text = render_text([_plan(dropped={"excluded": 2, "foreign domain": 1})])
    assert text.splitlines() == [
        "example.com  (LDIF x.ldif: 2 matching entries)",
        "  - a.smith@example.com  alias → alice@example.com",
        '  - bob@example.com  mailbox "Bob"',
        '  ~ alice@example.com  name: "Alice Smith" → "Alice Jones"',
        '  + carol@example.com  mailbox "Carol"',
        "  not managed: 2 excluded, 1 foreign domain",
        "example.com: 1 to add, 1 to update, 2 to remove (3 → 2 recipients)",
        "Plan: 1 to add, 1 to update, 2 to remove in 1 of 1 domain.",
    ]


def test_json_rendering_follows_its_schema() -> None:
    schema = json.loads((SCHEMAS / "plan.schema.json").read_text())
    document = json.loads(render_json([_plan(), _plan(domain="example.org", changes=())]))
    jsonschema.Draft7Validator(schema).validate(document)
    assert document["format_version"] == 1
    assert document["totals"] == {"add": 1, "update": 1, "remove": 2}
    assert document["domains"][0]["changes"][2] == {
        "action": "update",
        "address": "alice@example.com",
        "old": {"kind": "mailbox", "name": "Alice Smith", "id": "g-1", "status": "active"},
        "new": {"kind": "mailbox", "name": "Alice Jones", "id": "g-1", "status": "active"},
    }


def test_commit_message_is_summary_plan_and_trailers() -> None:
    message = commit_message(_plan(), "apply")
    subject, blank, *rest = message.splitlines()
    assert subject == "example.com: 1 to add, 1 to update, 2 to remove (3 → 2 recipients)"
    assert blank == ""
    assert '  + carol@example.com  mailbox "Carol"' in rest
    assert rest[-4:] == [
        "Reconciler-Domain: example.com",
        "Reconciler-Action: apply",
        "Reconciler-Counts: add=1 update=1 remove=2",
        f"Reconciler-Plan-Digest: {_plan().digest()}",
    ]


def test_commit_message_caps_the_listed_changes() -> None:
    many = {f"u{i:05d}@example.com": BOB for i in range(1500)}
    plan = _plan(changes=compute_changes({}, many), existing_count=0, desired_count=1500)
    message = commit_message(plan, "apply")
    assert message.count("\n  + ") == 1000
    assert "  … and 500 more changes" in message


# --- state lines compared as text -------------------------------------------------------------


def _stored(recipients: dict[str, Recipient]) -> StoredRecipients:
    state = parse_state(dump_state(State("example.com", recipients), "x"), Path("x"), "example.com")
    assert isinstance(state.recipients, StoredRecipients)
    return state.recipients


def test_a_loaded_state_diffs_like_the_recipients_it_holds() -> None:
    stored = _stored(EXISTING)
    assert compute_changes(stored, DESIRED) == compute_changes(EXISTING, DESIRED)
    assert compute_changes(stored, dict(EXISTING)) == ()
    assert compute_changes(stored, _stored(EXISTING)) == ()


def test_a_valid_but_not_canonical_line_is_no_change() -> None:
    text = '{"kind": "alias",  "target": "alice@example.com"}'  # two spaces: not canonical
    loaded = parse_state(
        "domain: example.com\nhold: null\nrecipients:\n  a.smith@example.com: " + text + "\n",
        Path("x"),
        "example.com",
    )
    assert compute_changes(loaded.recipients, {"a.smith@example.com": A_SMITH}) == ()


def test_applying_changes_to_a_loaded_state_rewrites_only_the_changed_lines() -> None:
    stored = _stored(EXISTING)
    after = apply_changes(stored, compute_changes(stored, DESIRED))
    assert dict(after) == DESIRED
    before_lines = dump_state(State("example.com", EXISTING), "x").splitlines()
    after_lines = dump_state(State("example.com", after), "x").splitlines()
    assert set(before_lines) - set(after_lines) == {
        '  a.smith@example.com: {"kind": "alias", "target": "alice@example.com"}',
        '  alice@example.com: {"kind": "mailbox", "name": "Alice Smith", "id": "g-1", '
        '"status": "active"}',
        '  bob@example.com: {"kind": "mailbox", "name": "Bob", "id": "g-2", "status": "active"}',
    }


# --- the merge-join over a loaded state, against the plain dictionary diff ---------------------

_LOCALS = st.sampled_from(["a", "b", "b.c", "z", "ä", "x+tag", "0"])
# Recipient is a named tuple: st.builds would fill the fields left out too, so each kind is
# built from exactly the fields it is given.
_RECIPIENTS = st.one_of(
    st.builds(
        lambda name, id_, status: Recipient("mailbox", name, id_, status),
        st.sampled_from([None, "A", 'B "quoted"']),
        st.sampled_from([None, "g-1", "g-2"]),
        st.sampled_from([None, "active", "disabled"]),
    ),
    st.sampled_from(["a@x.org", "b@x.org"]).map(lambda target: Recipient("alias", target=target)),
    st.lists(st.sampled_from(["a@x.org", "b@x.org"]), max_size=2).map(
        lambda members: Recipient("list", "L", members=tuple(members))
    ),
)
_SIDES = st.dictionaries(
    st.tuples(_LOCALS, st.sampled_from(["x.org", "y.org"])).map("@".join), _RECIPIENTS
)


@settings(max_examples=300, deadline=None)
@given(existing=_SIDES, desired=_SIDES)
def test_the_changes_of_two_dictionaries_are_their_differences_by_definition(
    existing: dict[str, Recipient], desired: dict[str, Recipient]
) -> None:
    every = sorted(existing.keys() | desired.keys())
    expected = (
        *(Change("remove", a, existing[a], None) for a in every if a not in desired),
        *(
            Change("update", a, existing[a], desired[a])
            for a in every
            if a in existing and a in desired and existing[a] != desired[a]
        ),
        *(Change("add", a, None, desired[a]) for a in every if a not in existing),
    )
    assert compute_changes(existing, desired) == expected


@settings(max_examples=300, deadline=None)
@given(existing=_SIDES, desired=_SIDES)
def test_a_loaded_state_diffs_and_applies_exactly_like_a_dictionary(
    existing: dict[str, Recipient], desired: dict[str, Recipient]
) -> None:
    stored = _loaded(existing)
    changes = compute_changes(stored, desired)
    assert changes == compute_changes(existing, desired)
    assert compute_changes(stored, _loaded(desired)) == changes  # rollback: text on both sides
    after = apply_changes(stored, changes)
    assert dict(after) == desired
    assert len(after) == len(desired)
    assert dump_state(State("example.com", after), "x") == dump_state(
        State("example.com", desired), "x"
    )


def _loaded(recipients: dict[str, Recipient]) -> Mapping[str, Recipient]:
    text = dump_state(State("example.com", recipients), "x")
    return parse_state(text, Path("x"), "example.com").recipients


def test_the_state_is_written_in_pieces_that_join_to_the_whole_file() -> None:
    state = State("example.com", {f"u{i:03d}@example.com": BOB for i in range(10)})
    pieces = list(iter_state_text(state, "x", lines_per_chunk=3))
    assert len(pieces) == 1 + 4  # the header, then 3 + 3 + 3 + 1 lines
    assert "".join(pieces) == dump_state(state, "x")
    assert list(iter_state_text(State("example.com"), "x"))[-1].endswith("recipients: {}\n")


def test_a_loaded_state_is_walked_without_building_an_index_until_asked_by_address() -> None:
    stored = _stored({**EXISTING, "carol@example.com": CAROL})
    assert stored._index is None
    assert compute_changes(stored, DESIRED) == compute_changes(
        {**EXISTING, "carol@example.com": CAROL}, DESIRED
    )
    assert stored._index is None  # the diff walked the text
    assert stored["bob@example.com"] == BOB
    assert "nobody@example.com" not in stored
    assert stored._index is None  # a few lookups search the text
    for _ in range(64):
        assert stored["carol@example.com"] == CAROL
    assert stored._index is not None  # many build the index
    assert stored["bob@example.com"] == BOB


@given(name=st.text(min_size=1))
def test_plan_lines_quote_names_as_json_does(name: str) -> None:
    """As JSON writes them, with what would not print (DEL, C1 controls, bidirectional
    overrides, line separators…) escaped too: json.loads gives the name back."""
    summary = summarize(Recipient("mailbox", name, "1", "active"))
    assert summary.isprintable()
    kind, _, shown_name = summary.partition(" ")
    assert kind == "mailbox"
    assert json.loads(shown_name) == name
    if json.dumps(name, ensure_ascii=False).isprintable():
        assert shown_name == json.dumps(name, ensure_ascii=False)


@given(
    action=st.sampled_from(["add", "update", "deactivate", "remove"]),
    address=st.text(min_size=1),
    renamed_from=st.none() | st.text(min_size=1),
    old=any_recipient(st.text(min_size=1)),
    new=any_recipient(st.text(min_size=1)),
)
def test_a_plan_line_is_one_printable_line_whatever_the_state_holds(
    action: str, address: str, renamed_from: str | None, old: Recipient, new: Recipient
) -> None:
    """A hand-edited state can hold any text, newlines and terminal escapes included: a plan
    line never breaks in two, or forges another, for it. A printable address is shown as
    it is; any other is quoted, and json.loads gives it back."""
    change = Change(action, address, old, new, renamed_from)  # type: ignore[arg-type]
    line = change.describe()
    assert line.isprintable()
    assert f" {shown(address)}" in line


@given(st.text())
def test_an_address_is_shown_as_it_is_or_quoted_to_be_read_back(text: str) -> None:
    assert shown(text).isprintable()
    if text.isprintable():
        assert shown(text) == text
    else:
        assert json.loads(shown(text)) == text


@given(
    domain=st.text(max_size=10),
    changes=st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=4),
        max_size=6,
    ),
)
def test_the_digest_is_streamed_but_that_of_the_whole_json_text(
    domain: str, changes: list[dict[str, object]]
) -> None:
    import hashlib

    from reconciler.plan import plan_digest

    whole = json.dumps([domain, changes], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert plan_digest(domain, iter(changes)) == hashlib.sha256(whole.encode()).hexdigest()[:16]


_texts = st.text(max_size=6)
_any_recipient = any_recipient(_texts)
_any_change = st.builds(
    Change,
    action=st.sampled_from(["add", "update", "deactivate", "remove"]),
    address=_texts,
    old=st.none() | _any_recipient,
    new=st.none() | _any_recipient,
    renamed_from=st.none() | _texts,
)


@given(changes=st.lists(_any_change, max_size=5), domain=_texts)
def test_a_plans_digest_is_that_of_its_changes_plain_json(
    changes: list[Change], domain: str
) -> None:
    from reconciler.plan import _compact, _compact_change, plan_digest

    for change in changes:
        assert _compact_change(change) == _compact(change.to_dict())
    plan = DomainPlan(domain, tuple(changes), 0, 0, "test")
    assert plan.digest() == plan_digest(domain, (c.to_dict() for c in changes))


def test_the_digest_of_thousands_of_changes_is_that_of_the_whole_json_text() -> None:
    import hashlib

    from reconciler.plan import plan_digest

    changes = [{"action": "add", "address": f"u{i}@x", "n": i} for i in range(9000)]
    whole = json.dumps(["x", changes], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert plan_digest("x", iter(changes)) == hashlib.sha256(whole.encode()).hexdigest()[:16]


@given(
    existing=st.dictionaries(st.sampled_from(["a@x.test", "b@x.test", "c@x.test"]), _any_recipient),
    desired=st.dictionaries(st.sampled_from(["b@x.test", "c@x.test", "d@x.test"]), _any_recipient),
)
def test_the_text_plan_has_a_line_per_change_as_the_change_describes_itself(
    existing: dict[str, Recipient], desired: dict[str, Recipient]
) -> None:
    changes = compute_changes(existing, desired)
    plan = _plan(changes=changes)
    text = render_text([plan])
    lines = "".join(f"  {change.describe()}\n" for change in changes)
    assert text.startswith(f"example.com  ({plan.source})\n{lines}")
