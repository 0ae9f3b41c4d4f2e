"""The state file: canonical text (one sorted line per address), fast parsing, YAML fallback.

dump_state → parse_state must be the identity; the text must stay valid YAML for every other
tool; anything not canonical is still read through the YAML loader, and every error names the
file (and the line where it is known).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from strategies import any_recipient

from reconciler.errors import StateError
from reconciler.recipient import Recipient
from reconciler.state import (
    Hold,
    State,
    _NotCanonical,
    _parse_canonical,
    dump_state,
    iter_state_text,
    load_state,
    parse_state,
    state_path,
    write_state,
)

SOURCE = "inventories/example.com.yaml"
PATH = Path("state/example.com.yaml")

ALICE = Recipient(
    kind="mailbox",
    name="Alice Smith",
    id="9c6f549d-3b72-9b35-275d-748825ee4a37",
    status="active",
)
A_SMITH = Recipient(kind="alias", target="alice@example.com")
SALES = Recipient(kind="list", name="Sales", members=("alice@example.com", "bob@example.com"))
BOB = Recipient(kind="mailbox", name="Bob Jones", id="2", status="disabled")

SMALL = State(
    "example.com",
    # Deliberately not in address order: the output is sorted all the same.
    {
        "sales@example.com": SALES,
        "alice@example.com": ALICE,
        "bob@example.com": BOB,
        "a.smith@example.com": A_SMITH,
    },
)

SMALL_TEXT = """\
# Managed by reconciler from inventories/example.com.yaml. Do not edit by hand.
domain: example.com
hold: null
recipients:
  a.smith@example.com: {"kind": "alias", "target": "alice@example.com"}
  alice@example.com: {"kind": "mailbox", "name": "Alice Smith", \
"id": "9c6f549d-3b72-9b35-275d-748825ee4a37", "status": "active"}
  bob@example.com: {"kind": "mailbox", "name": "Bob Jones", "id": "2", "status": "disabled"}
  sales@example.com: {"kind": "list", "name": "Sales", \
"members": ["alice@example.com", "bob@example.com"]}
"""


def parse(text: str, domain: str = "example.com") -> State:
    return parse_state(text, PATH, domain)


def plain(state: State) -> dict[str, Any]:
    """The state as the plain data a YAML loader should read from its file."""
    return {
        "domain": state.domain,
        "hold": state.hold.to_dict() if state.hold else None,
        "recipients": {a: r.to_dict() for a, r in state.recipients.items()},
    }


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def safe_load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


# --- the canonical text -------------------------------------------------------------------------


def test_a_small_state_is_written_exactly_like_this() -> None:
    assert dump_state(SMALL, SOURCE) == SMALL_TEXT


def test_the_output_does_not_depend_on_insertion_order() -> None:
    reordered = State("example.com", dict(reversed(list(SMALL.recipients.items()))))
    assert dump_state(reordered, SOURCE) == SMALL_TEXT


# In a new interpreter: the ABCs' answers are cached for the whole process.
ABC_ANSWERS = """
import collections.abc, json, sys
from reconciler.state import StoredRecipients
stored = StoredRecipients({"a@example.com": '{"kind": "mailbox"}'})
questions = [({}, StoredRecipients), ({}, collections.abc.Mapping), ([], StoredRecipients),
             (stored, collections.abc.Mapping), (stored, StoredRecipients)]
if sys.argv[1] == "mapping first":
    questions.reverse()
print(json.dumps({f"{type(o).__name__} {c.__name__}": isinstance(o, c) for o, c in questions}))
"""


@pytest.mark.parametrize("order", ["stored first", "mapping first"])
def test_stored_recipients_are_a_mapping_and_a_dict_is_not_stored_recipients(order: str) -> None:
    """Compiled with mypyc, the class would share Mapping's ABC caches without the fix in
    state.py: an answer about one was then taken as the other's."""
    answers = subprocess.run(
        [sys.executable, "-c", ABC_ANSWERS, order], capture_output=True, text=True, check=True
    )
    assert json.loads(answers.stdout) == {
        "dict StoredRecipients": False,
        "dict Mapping": True,
        "list StoredRecipients": False,
        "StoredRecipients Mapping": True,
        "StoredRecipients StoredRecipients": True,
    }


def test_an_empty_state_is_an_empty_mapping() -> None:
    assert dump_state(State("example.com"), SOURCE) == (
        "# Managed by reconciler from inventories/example.com.yaml. Do not edit by hand.\n"
        "domain: example.com\n"
        "hold: null\n"
        "recipients: {}\n"
    )
    assert parse(dump_state(State("example.com"), SOURCE)) == State("example.com")


def test_a_hold_is_one_json_line() -> None:
    held = State(
        "example.com", {}, Hold("rolled back to abc123: bad import", "2024-05-01T10:00:00Z")
    )
    text = dump_state(held, SOURCE)
    assert text.splitlines()[2] == (
        'hold: {"reason": "rolled back to abc123: bad import", "since": "2024-05-01T10:00:00Z"}'
    )
    assert parse(text) == held


def test_the_small_state_round_trips() -> None:
    assert parse(SMALL_TEXT) == SMALL


# --- addresses and names that need quoting ------------------------------------------------------

AWKWARD_ADDRESSES = [
    "o'brien@example.com",
    '"a b"@example.com',
    "x#y@example.com",
    "a:b@example.com",
    "-dash@example.com",
    "? question@example.com",
    "null@example.com",
    "ü@example.com",
    "&anchor@example.com",
    "*alias@example.com",
]


def test_awkward_addresses_are_quoted_and_round_trip() -> None:
    state = State("example.com", dict.fromkeys(AWKWARD_ADDRESSES, A_SMITH))
    text = dump_state(state, SOURCE)
    lines = text.splitlines()[4:]
    assert '  "o\'brien@example.com": {"kind": "alias", "target": "alice@example.com"}' in lines
    assert '  "\\"a b\\"@example.com": {"kind": "alias", "target": "alice@example.com"}' in lines
    assert '  "x#y@example.com": {"kind": "alias", "target": "alice@example.com"}' in lines
    # A plain address needs no quotes; "null@" is still a string key.
    assert '  null@example.com: {"kind": "alias", "target": "alice@example.com"}' in lines
    assert parse(text) == state
    assert safe_load(text) == plain(state)


NAMES = [
    "Line\u2028Separator",
    "Para\u2029Separator",
    "Bell\x07Tab\tNewline\nReturn\rNull\x00",
    "Next\x85Line\x0bVertical\x0cFormfeed\x1cFile",
    "DEL\x7f and C1\x9b",
    "Zoë Ångström 😀 日本",
    'Quote " and backslash \\',
    "O'Brien # not a comment: {not: yaml}",
    "\ufeffBOM at the start",
]


def test_names_with_line_breaks_and_control_characters_stay_on_one_line() -> None:
    state = State(
        "example.com",
        {
            f"user{n}@example.com": Recipient(kind="mailbox", name=name, id=str(n))
            for n, name in enumerate(NAMES)
        },
    )
    text = dump_state(state, SOURCE)
    # str.splitlines() breaks at U+2028, U+0085, \x0b, \x1c … as well: none is left raw.
    assert len(text.splitlines()) == 4 + len(NAMES)
    assert text.count("\n") == 4 + len(NAMES)
    assert "\\u2028" in text
    assert "Zoë Ångström 😀 日本" in text  # printable non-ASCII is written as it is
    assert parse(text) == state
    assert safe_load(text) == plain(state)


def test_the_dumped_file_is_yaml_that_a_safe_loader_reads_the_same() -> None:
    state = State(
        "example.com",
        {**SMALL.recipients, "o'brien@example.com": Recipient(kind="mailbox", name="Ó\u2028B")},
        Hold("review", "2024-05-01"),
    )
    text = dump_state(state, SOURCE)
    assert safe_load(text) == plain(state)
    assert _parse_canonical(text) == {
        "domain": "example.com",
        "hold": {"reason": "review", "since": "2024-05-01"},
        # The fast path keeps each recipient as its line's text: the canonical JSON.
        "recipients": {
            address: (line, recipient.to_json())
            for line, (address, recipient) in enumerate(sorted(state.recipients.items()), start=5)
        },
    }


# --- the YAML fallback --------------------------------------------------------------------------

BLOCK_STYLE = """\
# Resolved by hand after a merge conflict: same content, not the canonical layout.
domain: example.com
hold:
recipients:
  sales@example.com:
    kind: list
    name: Sales
    members:
      - alice@example.com
      - bob@example.com
  alice@example.com:
    kind: mailbox
    name: Alice Smith
    id: 9c6f549d-3b72-9b35-275d-748825ee4a37
    status: active
  bob@example.com: {kind: mailbox, name: Bob Jones, id: '2', status: disabled}
  'a.smith@example.com': {"kind": "alias", "target": "alice@example.com"}  # Alice's old name
"""


def test_block_style_yaml_is_read_through_the_fallback_to_the_same_state() -> None:
    with pytest.raises(_NotCanonical):
        _parse_canonical(BLOCK_STYLE)
    assert parse(BLOCK_STYLE) == SMALL


@pytest.mark.parametrize(
    "edit",
    [
        ("domain: example.com\n", 'domain: "example.com"\n'),
        ("domain: example.com\n", "domain: example.com  # the demo\n"),
        ("hold: null\n", "hold: ~\n"),
        ("hold: null\n", "hold: null  # no hold\n"),
        (": {", ":   {"),
    ],
    ids=["quoted-domain", "commented-domain", "tilde-null", "commented-hold", "extra-spaces"],
)
def test_hand_edits_that_yaml_reads_the_same_give_the_same_state(edit: tuple[str, str]) -> None:
    edited = SMALL_TEXT.replace(*edit)
    assert edited != SMALL_TEXT
    assert parse(edited) == SMALL


def test_crlf_line_endings_give_the_same_state() -> None:
    assert parse(SMALL_TEXT.replace("\n", "\r\n")) == SMALL


def test_a_large_state_loads_on_the_fast_path() -> None:
    recipients = {
        f"user{n:06d}@example.com": Recipient(
            kind="mailbox", name=f"User {n}", id=f"id-{n}", status="active"
        )
        for n in range(100_000)
    }
    recipients |= {
        f"alias{n:06d}@example.com": Recipient(kind="alias", target=f"user{n:06d}@example.com")
        for n in range(0, 100_000, 10)
    }
    state = State("example.com", recipients)
    text = dump_state(state, SOURCE)
    assert text.count("\n") == 4 + 110_000
    # _parse_canonical raises _NotCanonical for anything the fallback would have to read.
    assert len(_parse_canonical(text)["recipients"]) == 110_000
    assert parse(text) == state


# --- errors -------------------------------------------------------------------------------------


def test_a_state_for_another_domain_is_refused() -> None:
    with pytest.raises(StateError) as caught:
        parse(SMALL_TEXT, domain="example.org")
    assert caught.value.message == (
        f"{PATH}: the state file is for 'example.com', not 'example.org'"
    )


def test_an_unknown_recipient_field_names_the_line() -> None:
    text = SMALL_TEXT.replace('"name": "Bob Jones"', '"colour": "blue"')
    with pytest.raises(StateError) as caught:
        parse(text)
    assert caught.value.message == f"{PATH}:7: recipient bob@example.com: unknown field 'colour'"


def test_a_bad_kind_names_the_line() -> None:
    text = SMALL_TEXT.replace('{"kind": "list"', '{"kind": "group"')
    with pytest.raises(StateError) as caught:
        parse(text)
    assert caught.value.message == (
        f"{PATH}:8: recipient sales@example.com: kind must be one of mailbox, alias, list, "
        "not 'group'"
    )


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('"status": "disabled"', '"status": "gone"', "status must be one of active, disabled"),
        ('"name": "Bob Jones"', '"name": 42', "name must be a string"),
        ('"target": "alice@example.com"', '"target": ""', "an alias needs a target"),
        ('"members": ["alice@example.com"', '"members": [1', "members must be a list of addresses"),
    ],
)
def test_bad_fields_name_the_recipient_and_the_line(old: str, new: str, reason: str) -> None:
    text = SMALL_TEXT.replace(old, new)
    assert text != SMALL_TEXT
    with pytest.raises(StateError, match=rf"^{PATH}:\d: recipient [a-z.]+@example\.com: {reason}"):
        parse(text)


def test_invalid_yaml_names_the_line() -> None:
    text = SMALL_TEXT.replace('"target": "alice@example.com"}', '"target": "alice@example.com"]')
    with pytest.raises(StateError) as caught:
        parse(text)
    assert caught.value.message == (
        f"{PATH}:5: the state file is not valid YAML: expected ',' or '}}', but got ']'"
    )
    assert caught.value.hint is not None
    assert "git checkout" in caught.value.hint


def test_an_address_listed_twice_is_an_error_at_the_second_line() -> None:
    text = SMALL_TEXT + '  alice@example.com: {"kind": "alias", "target": "bob@example.com"}\n'
    with pytest.raises(StateError, match=rf"^{PATH}:9: .*duplicate key \"alice@example\.com\""):
        parse(text)


def test_an_upper_case_address_is_refused() -> None:
    text = SMALL_TEXT.replace("  bob@example.com", "  Bob@example.com")
    with pytest.raises(StateError, match=r"'Bob@example\.com' is not a lower-case address"):
        parse(text)


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(StateError, match=r"^state/example\.com\.yaml: the state file is not a map"):
        parse("- alice@example.com\n- bob@example.com\n")


def test_a_bad_hold_is_refused() -> None:
    with pytest.raises(StateError, match=r"'hold' must be null or \{reason, since\}"):
        parse(SMALL_TEXT.replace("hold: null", 'hold: "yes"'))


# --- files --------------------------------------------------------------------------------------


def test_a_missing_state_file_is_an_empty_state(tmp_path: Path) -> None:
    assert load_state(tmp_path / "example.com.yaml", "example.com") == State("example.com")


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    path = state_path(tmp_path / "state", "example.com")
    assert path == tmp_path / "state" / "example.com.yaml"
    write_state(path, dump_state(SMALL, SOURCE))  # creates the state directory
    assert path.read_bytes() == SMALL_TEXT.encode("utf-8")
    assert load_state(path, "example.com") == SMALL
    assert names(path.parent) == ["example.com.yaml"]  # no temporary file left behind


def test_a_state_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "example.com.yaml"
    path.write_bytes(b"domain: example.com\nhold: null\nrecipients:\n  a@example.com: \xff\n")
    with pytest.raises(StateError, match=rf"^{path}: cannot read the state file"):
        load_state(path, "example.com")


def test_a_reader_holding_the_old_file_keeps_seeing_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "example.com.yaml"
    write_state(path, "old\n")
    with path.open(encoding="utf-8") as reader:
        write_state(path, "new\n")
        assert reader.read() == "old\n"  # replaced, not rewritten in place
    assert path.read_text(encoding="utf-8") == "new\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "example.com.yaml"
    write_state(path, SMALL_TEXT)
    # A lone surrogate cannot be encoded: the write fails after the temporary file was made.
    with pytest.raises(UnicodeEncodeError):
        write_state(path, SMALL_TEXT + "  x@example.com: \ud800\n")
    assert path.read_text(encoding="utf-8") == SMALL_TEXT
    assert names(tmp_path) == ["example.com.yaml"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "example.com.yaml"
    target.mkdir()  # a directory where the file should go: the final rename fails
    (target / "keep").write_text("kept", encoding="utf-8")
    with pytest.raises(IsADirectoryError):
        write_state(target, SMALL_TEXT)
    assert names(tmp_path) == ["example.com.yaml"]
    assert (target / "keep").read_text(encoding="utf-8") == "kept"


def test_a_canonical_file_is_read_whole_and_anything_else_line_by_line() -> None:
    from reconciler.state import StoredRecipients, _parse_whole

    # Mailboxes and aliases only: a list line has no fixed shape and goes line by line.
    assert _parse_whole(dump_state(SMALL, SOURCE), Path("x.yaml"), "example.com") is None
    people = {a: r for a, r in SMALL.recipients.items() if r.kind != "list"}
    text = dump_state(State("example.com", people), SOURCE)
    whole = _parse_whole(text, Path("x.yaml"), "example.com")
    assert whole is not None
    assert isinstance(whole.recipients, StoredRecipients)
    assert dict(whole.recipients) == people == dict(parse(text).recipients)
    # One hand-made change of spacing: not the exact layout, read by the line reader instead.
    spaced = text.replace('{"kind": "alias", ', '{"kind":  "alias", ', 1)
    assert _parse_whole(spaced, Path("x.yaml"), "example.com") is None
    assert dict(parse(spaced).recipients) == people
    # An alias with an empty target never passes the whole-file reader.
    empty = text.replace('"target": "alice@example.com"', '"target": ""', 1)
    assert _parse_whole(empty, Path("x.yaml"), "example.com") is None


def test_lines_out_of_order_are_read_by_the_line_reader_and_written_back_sorted() -> None:
    from reconciler.state import _parse_whole

    people = {a: r for a, r in SMALL.recipients.items() if r.kind != "list"}
    text = dump_state(State("example.com", people), SOURCE)
    head, _, body = text.partition("recipients:\n")
    lines = body.splitlines(keepends=True)
    shuffled = head + "recipients:\n" + "".join(reversed(lines))
    assert len(lines) > 1
    assert _parse_whole(shuffled, Path("x.yaml"), "example.com") is None
    state = parse(shuffled)
    assert dict(state.recipients) == people
    assert dump_state(state, SOURCE) == text


def test_mailboxes_with_user_names_and_disabled_ones_are_read_whole() -> None:
    from reconciler.state import StoredRecipients, _parse_whole

    people = {
        "alice@example.com": Recipient("mailbox", "Alice", "1", "active", username="asmith"),
        "bob@example.com": Recipient("mailbox", "Bob", "2", "disabled", username='b"j'),
        "a@example.com": Recipient(kind="alias", target="alice@example.com"),
    }
    text = dump_state(State("example.com", people), SOURCE)
    whole = _parse_whole(text, Path("x.yaml"), "example.com")
    assert whole is not None and isinstance(whole.recipients, StoredRecipients)
    assert dict(whole.recipients) == people
    # Fields the state holds only now and then (privileges) are read line by line, the same.
    given = {**people, "c@example.com": Recipient("mailbox", privileges=("login",))}
    text = dump_state(State("example.com", given), SOURCE)
    assert _parse_whole(text, Path("x.yaml"), "example.com") is None
    assert dict(parse(text).recipients) == given


# --- writing an updated state cuts the unchanged lines from the loaded text ------------------

_local = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_recipient = st.one_of(
    st.builds(lambda n: Recipient("mailbox", n, "id-" + n, "active"), _local),
    st.builds(lambda t: Recipient(kind="alias", target=f"{t}@example.com"), _local),
)
_recipients = st.dictionaries(_local.map(lambda a: f"{a}@example.com"), _recipient, max_size=30)


@settings(max_examples=300, deadline=None)
@given(before=_recipients, added=_recipients, data=st.data())
def test_an_updated_state_is_written_as_if_dumped_anew(
    before: dict[str, Recipient], added: dict[str, Recipient], data: st.DataObject
) -> None:
    stored = parse(dump_state(State("example.com", before), SOURCE)).recipients
    assert not isinstance(stored, dict)
    gone = data.draw(
        st.lists(st.sampled_from(sorted(before)), unique=True) if before else st.just([])
    )
    changes = [(a, None) for a in gone if a not in added] + list(added.items())
    after = {a: r for a, r in before.items() if a not in gone} | added
    updated = State("example.com", stored.updated(changes), Hold("rolled back", "2026-01-01"))
    expected = dump_state(State("example.com", after, Hold("rolled back", "2026-01-01")), SOURCE)
    assert "".join(iter_state_text(updated, SOURCE)) == expected
    # and an unchanged one is its file again
    assert "".join(iter_state_text(State("example.com", stored), SOURCE)) == dump_state(
        State("example.com", before), SOURCE
    )


_any_recipient = any_recipient(st.text(max_size=12))


@given(recipient=_any_recipient)
def test_the_direct_text_of_a_recipient_is_its_canonical_json(recipient: Recipient) -> None:
    from reconciler.recipient import canonical_json

    assert recipient.to_json() == canonical_json(recipient.to_dict())


# --- the edges of a spliced write ----------------------------------------------------------------

_PEOPLE = {
    "bob@example.com": Recipient("mailbox", "Bob Jones", "2", "active"),
    "carol@example.com": Recipient("mailbox", "Carol Dörr", "3", "disabled", username="cd"),
    "dave@example.com": Recipient(kind="alias", target="bob@example.com"),
}
_NEW = Recipient("mailbox", "New \u2028 Person", "9", "active")


def _loaded(recipients: dict[str, Recipient]) -> Any:
    """``recipients`` as a canonical file loads them: lines in the file's text, not objects."""
    from reconciler.state import _parse_whole

    whole = _parse_whole(dump_state(State("example.com", recipients), SOURCE), PATH, "example.com")
    assert whole is not None  # the whole-file reader took it: writes are spliced from its text
    return whole.recipients


def _after(before: dict[str, Recipient], changes: list[tuple[str, Recipient | None]]) -> str:
    after = dict(before)
    for address, recipient in changes:
        if recipient is None:
            after.pop(address, None)
        else:
            after[address] = recipient
    return dump_state(State("example.com", after), SOURCE)


@pytest.mark.parametrize(
    ("before", "changes"),
    [
        pytest.param(_PEOPLE, [("bob@example.com", None)], id="remove-the-first-line"),
        pytest.param(_PEOPLE, [("dave@example.com", None)], id="remove-the-last-line"),
        pytest.param(_PEOPLE, [(a, None) for a in _PEOPLE], id="remove-every-line"),
        pytest.param(_PEOPLE, [("aaron@example.com", _NEW)], id="add-before-the-first"),
        pytest.param(_PEOPLE, [("zoe@example.com", _NEW)], id="add-after-the-last"),
        pytest.param(
            _PEOPLE,
            [("a@example.com", _NEW), ("b@example.com", _NEW), ("bob@example.com", None)],
            id="two-adds-before-a-removed-first-line",
        ),
        pytest.param(
            _PEOPLE,
            [("dave@example.com", _NEW), ("zz@example.com", _NEW), ("zzz@example.com", _NEW)],
            id="update-the-last-and-add-two-after-it",
        ),
        pytest.param(
            _PEOPLE,
            [("o'brien@example.com", _NEW), ("jörg@example.com", _NEW)],
            id="adds-with-quoted-keys",
        ),
        pytest.param(_PEOPLE, [("nobody@example.com", None)], id="remove-an-absent-address"),
        pytest.param({"solo@example.com": _PEOPLE["bob@example.com"]}, [], id="one-line-unchanged"),
        pytest.param(
            {"solo@example.com": _PEOPLE["bob@example.com"]},
            [("solo@example.com", _NEW)],
            id="one-line-updated",
        ),
        pytest.param(
            {"solo@example.com": _PEOPLE["bob@example.com"]},
            [("solo@example.com", None)],
            id="one-line-removed",
        ),
        pytest.param(
            {"solo@example.com": _PEOPLE["bob@example.com"]},
            [("a@example.com", _NEW), ("z@example.com", _NEW)],
            id="one-line-with-adds-around-it",
        ),
    ],
)
def test_a_spliced_write_at_the_edges_is_a_fresh_dump(
    before: dict[str, Recipient], changes: list[tuple[str, Recipient | None]]
) -> None:
    stored = _loaded(before)
    updated = stored.updated(changes)
    assert updated._spliced() is not None  # the text is cut from the file, not walked
    written = "".join(iter_state_text(State("example.com", updated), SOURCE))
    assert written == _after(before, changes)
    assert dump_state(parse(written), SOURCE) == written


def test_lines_with_escapes_and_non_ascii_text_are_kept_as_written_beside_a_change() -> None:
    # Valid lines that are not what dump_state would write today (\/ and \u escapes, raw
    # non-ASCII): the whole-file reader keeps them, and a splice must copy them byte for byte.
    text = (
        "# Managed by reconciler from inventories/example.com.yaml. Do not edit by hand.\n"
        "domain: example.com\nhold: null\nrecipients:\n"
        '  a@example.com: {"kind": "mailbox", "name": "A\\/B \\u00e9 \\"q\\"", "id": "1"}\n'
        '  b@example.com: {"kind": "mailbox", "name": "Jörg 日本", "id": "2"}\n'
        '  c@example.com: {"kind": "alias", "target": "b@example.com"}\n'
    )
    stored = parse(text).recipients
    assert stored._spliced() is not None
    assert stored["a@example.com"].name == 'A/B é "q"'
    updated = stored.updated([("b@example.com", None), ("d@example.com", _NEW)])
    written = "".join(iter_state_text(State("example.com", updated), SOURCE))
    lines = text.splitlines(keepends=True)
    assert written == "".join([*lines[:5], lines[6], f"  d@example.com: {_NEW.to_json()}\n"])


def test_a_hold_set_or_lifted_with_no_recipient_change_keeps_every_line() -> None:
    stored = _loaded(_PEOPLE)
    body = dump_state(State("example.com", _PEOPLE), SOURCE).partition("recipients:\n")[2]
    for hold in (Hold("rolled back to 0123456789", "2026-01-01T00:00:00Z"), None):
        for recipients in (stored, stored.updated([])):
            written = "".join(iter_state_text(State("example.com", recipients, hold), SOURCE))
            assert written == dump_state(State("example.com", _PEOPLE, hold), SOURCE)
            assert written.endswith("recipients:\n" + body)


def test_an_updated_view_of_an_updated_view_is_written_as_the_changes_in_order() -> None:
    stored = _loaded(_PEOPLE)
    first = [("bob@example.com", None), ("eve@example.com", _NEW)]
    second = [("eve@example.com", None), ("bob@example.com", _NEW), ("dave@example.com", None)]
    twice = stored.updated(first).updated(second)
    written = "".join(iter_state_text(State("example.com", twice), SOURCE))
    assert written == _after(_PEOPLE, first + second)
    assert dict(twice) == dict(parse(written).recipients)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: t[:-1], id="no-final-newline"),
        pytest.param(lambda t: t.replace("\n", "\r\n"), id="crlf"),
        pytest.param(lambda t: t.replace("\n", "\r\n", 5), id="crlf-on-some-lines"),
    ],
)
def test_text_the_whole_file_reader_refuses_is_read_and_rewritten_by_the_line_reader(
    edit: Any,
) -> None:
    from reconciler.state import _parse_whole

    text = edit(dump_state(State("example.com", _PEOPLE), SOURCE))
    assert _parse_whole(text, PATH, "example.com") is None  # never sliced at wrong offsets
    stored = parse(text).recipients
    assert dict(stored) == _PEOPLE
    changes: list[tuple[str, Recipient | None]] = [
        ("dave@example.com", None),
        ("e@example.com", _NEW),
    ]
    written = "".join(iter_state_text(State("example.com", stored.updated(changes)), SOURCE))
    assert written == _after(_PEOPLE, changes)


def test_a_crlf_file_on_disk_is_read_whole_and_written_back_with_lf(tmp_path: Path) -> None:
    # Files are read with universal newlines, so a checkout with CRLF line ends is the same
    # canonical text to the whole-file reader, and is written back with LF.
    path = tmp_path / "example.com.yaml"
    text = dump_state(State("example.com", _PEOPLE), SOURCE)
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    stored = load_state(path, "example.com").recipients
    assert stored._spliced() is not None
    changes: list[tuple[str, Recipient | None]] = [("carol@example.com", _NEW)]
    write_state(path, iter_state_text(State("example.com", stored.updated(changes)), SOURCE))
    assert path.read_bytes() == _after(_PEOPLE, changes).encode("utf-8")


def test_every_ascii_character_in_a_name_or_target_reads_back_the_same_through_yaml() -> None:
    # ASCII text skips the escape regex: only DEL needs escaping there (JSON escapes C0).
    recipients = {}
    for code in range(128):
        recipients[f"m{code:03d}@example.com"] = Recipient("mailbox", f"a{chr(code)}b", "1")
        recipients[f"t{code:03d}@example.com"] = Recipient(
            kind="alias", target=f"x{chr(code)}y@example.com"
        )
    text = dump_state(State("example.com", recipients), SOURCE)
    assert "\x7f" not in text and "\\u007f" in text
    assert text.count("\n") == 4 + len(recipients)  # one line each
    assert safe_load(text) == plain(State("example.com", recipients))
    assert parse(text) == State("example.com", recipients)


def test_an_alias_with_a_user_name_keeps_it_in_its_line() -> None:
    # A valid state line (from_dict accepts it); the alias fast path must not drop the field
    # (the direct-text property above finds this case only now and then).
    alias = Recipient(kind="alias", target="alice@example.com", username="asmith")
    line = '{"kind": "alias", "username": "asmith", "target": "alice@example.com"}'
    assert alias.to_json() == line
    state = State("example.com", {"a@example.com": alias})
    assert parse(dump_state(state, SOURCE)) == state


# --- a plan's state: loaded unchecked, its lines checked as the diff compares them ---------------

# Addresses that sort around each other, plain and quoted (o'b, a space, non-ASCII, a ": ").
_addresses = st.sampled_from(["a", "b", "b.c", "o'b", '"a: {b"', "jörg", "z", "0"]).map(
    lambda local: f"{local}@example.com"
)
_line_recipients = st.one_of(
    st.builds(
        lambda name, id_, status: Recipient("mailbox", name, id_, status),
        st.sampled_from([None, "A", 'B "q"', "Dörr \u2028"]),
        st.sampled_from([None, "1", "2"]),
        st.sampled_from([None, "active", "disabled"]),
    ),
    st.sampled_from(["a@example.com", "z@example.com"]).map(lambda t: Recipient("alias", target=t)),
    st.just(Recipient("list", "L", members=("a@example.com",))),
    st.just(Recipient("mailbox", "P", "3", privileges=("login",))),
)
_states = st.dictionaries(_addresses, _line_recipients, max_size=8)

# Hand edits of a file's recipient lines: each keeps it readable or makes it an error.
_EDITS: dict[str, Any] = {
    "none": lambda lines: lines,
    "reversed": lambda lines: lines[::-1],
    "a line twice": lambda lines: lines[:1] + lines,
    "spaced": lambda lines: [line.replace('": "', '":  "', 1) for line in lines],
    "a quoted plain key": lambda lines: [
        line.replace("  a@example.com:", '  "a@example.com":') for line in lines
    ],
    "an unknown field": lambda lines: [
        line.replace('{"kind": "mailbox"', '{"kind": "mailbox", "colour": "blue"') for line in lines
    ],
    "a bad status": lambda lines: [line.replace('"active"', '"gone"') for line in lines],
    "a comment line": lambda lines: [*lines, "  # kept by hand\n"],
    "an upper-case key": lambda lines: [
        line.replace("  b@example.com:", '  "B@example.com":') for line in lines
    ],
    "not an object": lambda lines: [line.replace("{", "[", 1) for line in lines[:1]] + lines[1:],
}


def _edited(recipients: dict[str, Recipient], edit: str) -> str:
    head, _, body = dump_state(State("example.com", recipients), SOURCE).partition("recipients:\n")
    if not body:  # "recipients: {}": no lines to edit
        return head
    return head + "recipients:\n" + "".join(_EDITS[edit](body.splitlines(keepends=True)))


def _outcome(do: Any) -> Any:
    try:
        return do()
    except StateError as exc:
        return ("StateError", exc.message)


@settings(max_examples=400, deadline=None)
@given(existing=_states, desired=_states, edit=st.sampled_from(sorted(_EDITS)))
def test_an_unchecked_state_diffs_exactly_as_a_checked_one_or_fails_the_same(
    existing: dict[str, Recipient], desired: dict[str, Recipient], edit: str
) -> None:
    from reconciler.plan import compute_changes

    text = _edited(existing, edit)

    def checked() -> Any:
        stored = parse_state(text, PATH, "example.com").recipients
        return compute_changes(dict(stored.items()), desired), len(stored)

    def unchecked() -> Any:
        stored = parse_state(text, PATH, "example.com", check=False).recipients
        changes = compute_changes(stored, desired)
        return changes, len(stored)

    assert _outcome(unchecked) == _outcome(checked)


@settings(max_examples=200, deadline=None)
@given(
    existing=st.dictionaries(_addresses, _line_recipients, min_size=1, max_size=8), desired=_states
)
def test_after_an_unchecked_diff_the_file_is_searched_walked_and_spliced_as_written(
    existing: dict[str, Recipient], desired: dict[str, Recipient]
) -> None:
    from reconciler.plan import apply_changes, compute_changes

    text = dump_state(State("example.com", existing), SOURCE)
    stored = parse_state(text, PATH, "example.com", check=False).recipients
    changes = compute_changes(stored, desired)
    # Every address found by the search in the text, absent ones not, with no index built.
    for address in [*existing, "a@zzz.example", "@", "0"]:
        assert (address in stored) == (address in existing)
        if address in existing:
            assert stored.text_of(address) == existing[address].to_json()
    assert stored._index is None
    assert list(stored.items_text()) == [(a, existing[a].to_json()) for a in sorted(existing)]
    after = apply_changes(stored, changes)
    written = "".join(iter_state_text(State("example.com", after), SOURCE))
    assert written == dump_state(State("example.com", desired), SOURCE)


def test_a_bad_line_of_an_unchecked_state_is_reported_when_the_plan_reaches_it(
    tmp_path: Path,
) -> None:
    from reconciler.plan import compute_changes

    path = tmp_path / "example.com.yaml"
    path.write_text(SMALL_TEXT.replace('"status": "disabled"', '"status": "gone"'), "utf-8")
    state = load_state(path, "example.com", check=False)  # the header alone: no error yet
    with pytest.raises(StateError) as caught:
        compute_changes(state.recipients, dict(SMALL.recipients))
    assert caught.value.message == (
        f"{path}:7: recipient bob@example.com: status must be one of active, disabled"
    )
    with pytest.raises(StateError):  # eagerly, the same error at once
        load_state(path, "example.com")
