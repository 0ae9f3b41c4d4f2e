"""`history`, `history --address` and `show --at` over real Git repositories with applies and a
rollback, commits made at injected dates (GIT_COMMITTER_DATE / GIT_AUTHOR_DATE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gitrepo import (
    DOMAIN,
    User,
    change_directory,
    git,
    invoke,
    isolate_git,
    make_repo,
    state_path,
    users,
)

from reconciler.errors import StateError
from reconciler.history import parse_instant, recipient_in
from reconciler.recipient import Recipient
from reconciler.state import State, dump_state

pytestmark = pytest.mark.git

RENAMED = User("user02", name="Renamed Two", aliases=("user02.alias",))
WITHOUT_USER02 = [users(3)[0], users(3)[2]]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


class Clock:
    """Every commit from now on is made (authored and committed) at the given instant."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def at(self, instant: str) -> None:
        for name in ("GIT_COMMITTER_DATE", "GIT_AUTHOR_DATE"):
            self._monkeypatch.setenv(name, instant)


def applied(clock: Clock, instant: str) -> str:
    clock.at(instant)
    result = invoke("apply")
    assert result.exit_code == 0, result.output
    return git(Path.cwd(), "rev-parse", "HEAD")


@pytest.fixture
def story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Five state commits, one a day from 2026-03-01 10:00 UTC: user02 appears, is renamed,
    leaves, comes back, and a rollback undoes the comeback. Yields their commit ids."""
    clock = Clock(monkeypatch)
    clock.at("2026-02-28T09:00:00Z")
    repo = make_repo(tmp_path, users(3))
    monkeypatch.chdir(repo)
    commits = {"appeared": applied(clock, "2026-03-01T10:00:00Z")}
    change_directory(repo, [users(3)[0], RENAMED, users(3)[2]])
    commits["renamed"] = applied(clock, "2026-03-02T10:00:00Z")
    change_directory(repo, WITHOUT_USER02)
    commits["left"] = applied(clock, "2026-03-03T10:00:00Z")
    commits["export"] = change_directory(repo, users(3))  # a commit that is not a sync
    commits["back"] = applied(clock, "2026-03-04T10:00:00Z")
    clock.at("2026-03-05T10:00:00Z")
    assert invoke("rollback", DOMAIN).exit_code == 0
    commits["rollback"] = git(repo, "rev-parse", "HEAD")
    yield commits


def day(n: int) -> str:
    return f"2026-03-0{n}T10:00:00+00:00"


# --- history ---------------------------------------------------------------------------------


def test_history_shows_every_sync_newest_first_and_what_a_rollback_restored(
    story: dict[str, str],
) -> None:
    result = invoke("history")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    c = {name: sha[:10] for name, sha in story.items()}
    assert result.stdout.splitlines() == [
        f"{day(5)}  {c['rollback']}  {DOMAIN}  rollback  add=0 update=0 remove=2"
        f"  rollback to {c['export']}",
        f"{day(4)}  {c['back']}  {DOMAIN}  apply     add=2 update=0 remove=0",
        f"{day(3)}  {c['left']}  {DOMAIN}  apply     add=0 update=0 remove=2",
        f"{day(2)}  {c['renamed']}  {DOMAIN}  apply     add=0 update=1 remove=0",
        f"{day(1)}  {c['appeared']}  {DOMAIN}  apply     add=6 update=0 remove=0",
    ]


def test_history_as_json(story: dict[str, str]) -> None:
    result = invoke("history", DOMAIN, "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format_version"] == 1
    newest, *_, oldest = document["syncs"]
    assert newest == {
        "domain": DOMAIN,
        "commit": story["rollback"],
        "date": day(5),
        "committed": day(5),
        "action": "rollback",
        "counts": {"add": 0, "update": 0, "remove": 2},
        "rollback": True,
        "rollback_to": story["export"],
        "subject": f"Roll back {DOMAIN} to {story['export'][:10]}",
    }
    assert oldest["action"] == "apply"
    assert oldest["rollback"] is False
    assert oldest["counts"] == {"add": 6, "update": 0, "remove": 0}
    assert [s["commit"] for s in document["syncs"]] == [
        story[k] for k in ("rollback", "back", "left", "renamed", "appeared")
    ]


def test_history_of_a_hand_made_commit_says_manual(story: dict[str, str]) -> None:
    path = state_path(Path.cwd())
    path.write_text(path.read_text("utf-8").replace("User 01", "User One"), "utf-8")
    git(Path.cwd(), "commit", "--quiet", "-am", "Fix a name by hand")
    first = invoke("history").stdout.splitlines()[0]
    assert first.split()[3:] == ["manual"]


# --- history --address -----------------------------------------------------------------------


def test_an_address_appears_changes_disappears_and_reappears(story: dict[str, str]) -> None:
    result = invoke("history", "--address", "User02@Example.com")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    c = {name: sha[:10] for name, sha in story.items()}
    assert result.stdout.splitlines() == [
        f'{day(1)}  {c["appeared"]}  {DOMAIN}  apply     appeared  mailbox "User 02"',
        f'{day(2)}  {c["renamed"]}  {DOMAIN}  apply     changed  name: "User 02" → "Renamed Two"',
        f'{day(3)}  {c["left"]}  {DOMAIN}  apply     disappeared  mailbox "Renamed Two"',
        f'{day(4)}  {c["back"]}  {DOMAIN}  apply     appeared  mailbox "User 02"',
        f'{day(5)}  {c["rollback"]}  {DOMAIN}  rollback  disappeared  mailbox "User 02"',
    ]
    # Named domains are searched the same way.
    assert invoke("history", "--address", "user02@example.com", DOMAIN).stdout == result.stdout


def test_git_settings_do_not_change_what_is_read(story: dict[str, str]) -> None:
    before = invoke("history", "--address", "user02@example.com").stdout
    for key in ("grep.lineNumber", "grep.column", "grep.fullName", "color.ui"):
        git(Path.cwd(), "config", key, "always" if key == "color.ui" else "true")
    assert invoke("history", "--address", "user02@example.com").stdout == before


def test_a_version_edited_by_hand_in_another_layout(story: dict[str, str]) -> None:
    """That version is read whole (YAML), and the address's story goes on from it."""
    path = state_path(Path.cwd())
    path.write_text(
        "domain: example.com\nhold: null\nrecipients:\n"
        "  user01@example.com:\n    kind: mailbox\n    name: User One\n",
        encoding="utf-8",
    )
    git(Path.cwd(), "commit", "--quiet", "-am", "A hand edit in block style")
    result = invoke("history", "--address", "user01@example.com", "--format", "json")
    *_, last = json.loads(result.stdout)["events"]
    assert (last["event"], last["action"]) == ("changed", "manual")
    assert last["new"] == {"kind": "mailbox", "name": "User One"}
    assert [change["field"] for change in last["changes"]] == ["name", "id", "status", "username"]
    assert last["old"]["name"] == "User 01"


def test_an_alias_history(story: dict[str, str]) -> None:
    result = invoke("history", "--address", "user02.alias@example.com")
    assert [line.split(maxsplit=4)[4] for line in result.stdout.splitlines()] == [
        "appeared  alias → user02@example.com",
        "disappeared  alias → user02@example.com",
        "appeared  alias → user02@example.com",
        "disappeared  alias → user02@example.com",
    ]


def test_an_address_history_as_json(story: dict[str, str]) -> None:
    result = invoke("history", "--address", "user02@example.com", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format_version"] == 1
    assert document["address"] == "user02@example.com"
    assert document["domains"] == [DOMAIN]
    events = document["events"]
    assert [e["event"] for e in events] == [
        "appeared",
        "changed",
        "disappeared",
        "appeared",
        "disappeared",
    ]
    changed = events[1]
    assert changed["commit"] == story["renamed"]
    assert changed["changes"] == [{"field": "name", "old": "User 02", "new": "Renamed Two"}]
    assert changed["old"]["name"] == "User 02"
    assert changed["new"]["name"] == "Renamed Two"
    assert events[0]["old"] is None
    assert events[2]["new"] is None


def test_an_address_never_in_the_state(story: dict[str, str]) -> None:
    result = invoke("history", "--address", "nobody@example.com")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "nobody@example.com is in no committed state of example.com\n"


def test_an_address_of_another_domain_is_looked_for_in_every_state(
    story: dict[str, str],
) -> None:
    # No state/example.net.yaml: every domain's state is searched (it may be an alias domain).
    result = invoke("history", "--address", "user02@example.net", "-q")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_a_value_that_is_no_address_is_a_usage_error(story: dict[str, str]) -> None:
    result = invoke("history", "--address", "not an address")
    assert result.exit_code == 2
    assert "'not an address' is not a mail address" in result.stderr


# The fast path reads only the lines of a version that mention the address (git grep gives
# them); these pin down that it gives what parsing the whole version would.


def canonical(recipients: dict[str, Recipient]) -> str:
    return dump_state(State(DOMAIN, recipients), "inventories/example.com.yaml")


ALICE = Recipient("mailbox", name="Alice", id="1", status="active")
JOERG = Recipient("mailbox", name="Jörg", id="2")
ALIAS = Recipient("alias", target="alice@example.com")
LIST = Recipient("list", name="All", members=("alice@example.com", "jörg@example.com"))
STATE_PATH = Path("state/example.com.yaml")


def found(text: str, address: str) -> tuple[Recipient | None, bool]:
    """What recipient_in makes of ``text`` (a version), and whether it parsed it whole."""
    parsed: list[bool] = []

    def whole() -> str:
        parsed.append(True)
        return text

    mentions = [line for line in text.splitlines() if address in line]  # as git grep -F does
    return recipient_in(mentions, address, whole, STATE_PATH, DOMAIN), bool(parsed)


def test_an_address_is_found_by_its_line_only() -> None:
    text = canonical(
        {
            "alice@example.com": ALICE,
            "a@example.com": ALIAS,
            "jörg@example.com": JOERG,
            "all@example.com": LIST,
        }
    )
    assert '\n  "jörg@example.com": ' in text  # not a plain key: written as a JSON string
    assert found(text, "alice@example.com") == (ALICE, False)
    assert found(text, "jörg@example.com") == (JOERG, False)
    assert found(text, "all@example.com") == (LIST, False)
    # Mentioned as a target and a member only, and as the end of a longer address: absent.
    only_mentioned = canonical({"a@example.com": ALIAS, "all@example.com": LIST})
    assert found(only_mentioned, "alice@example.com") == (None, False)
    assert found(canonical({"malice@example.com": ALICE}), "alice@example.com") == (None, False)
    assert found(canonical({}), "alice@example.com") == (None, False)


@pytest.mark.parametrize(
    "text",
    [
        "domain: example.com\nhold: null\nrecipients:\n"
        "    alice@example.com: {kind: mailbox, name: Alice, id: '1', status: active}\n",
        "domain: example.com\nhold: null\nrecipients:\n  'alice@example.com':\n"
        "    kind: mailbox\n    name: Alice\n    id: '1'\n    status: active\n",
        'domain: example.com\nhold: null\nrecipients:\n  alice@example.com: {"kind": "mailbox",\n'
        '    "name": "Alice", "id": "1", "status": "active"}\n',
    ],
    ids=["other-indent", "block-mapping", "flow-over-two-lines"],
)
def test_a_version_in_another_layout_is_parsed_whole(text: str) -> None:
    assert found(text, "alice@example.com") == (ALICE, True)
    assert found(text, "bob@example.com") == (None, False)


def test_a_broken_version_names_its_commit(story: dict[str, str]) -> None:
    path = state_path(Path.cwd())
    line = "  user01.alias@example.com: {"
    path.write_text(path.read_text("utf-8").replace(line, line[:-1] + "[", 1), "utf-8")
    git(Path.cwd(), "commit", "--quiet", "-am", "Break the state")
    broken = git(Path.cwd(), "rev-parse", "--short=10", "HEAD")
    result = invoke("history", "--address", "user01.alias@example.com")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path} at {broken}: ")
    with pytest.raises(StateError):
        found(path.read_text("utf-8"), "user01.alias@example.com")


# --- show --at -------------------------------------------------------------------------------


def first_state_lines(sha: str) -> list[str]:
    return [
        f"{DOMAIN} at commit {sha} of {day(1)} (apply)",
        "  user01.alias@example.com  alias → user01@example.com",
        '  user01@example.com  mailbox "User 01"',
        "  user02.alias@example.com  alias → user02@example.com",
        '  user02@example.com  mailbox "User 02"',
        "  user03.alias@example.com  alias → user03@example.com",
        '  user03@example.com  mailbox "User 03"',
        "6 recipients",
    ]


def shown(*args: str) -> list[str]:
    result = invoke("show", DOMAIN, *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_show_at_a_revision(story: dict[str, str]) -> None:
    assert shown("--at", story["appeared"][:12]) == first_state_lines(story["appeared"])
    # A revision that did not touch the state: the last one before it that did.
    at_export = shown("--at", story["export"])
    assert at_export[0] == f"{DOMAIN} at commit {story['left']} of {day(3)} (apply)"
    assert at_export[-1] == "4 recipients"
    assert shown("--at", "HEAD~1")[0] == f"{DOMAIN} at commit {story['back']} of {day(4)} (apply)"


def test_show_without_at_is_the_last_committed_state_with_its_hold(story: dict[str, str]) -> None:
    lines = shown()
    assert lines[0] == f"{DOMAIN} at commit {story['rollback']} of {day(5)} (rollback)"
    assert lines[1].startswith(f"on hold: rolled back to {story['export'][:10]} (since ")
    assert lines[-1] == "4 recipients"
    assert "user02@example.com" not in "\n".join(lines)


@pytest.mark.parametrize(
    ("at", "commit", "instant"),
    [
        ("2026-03-01", "appeared", "2026-03-01T23:59:59+00:00"),  # a date: its end
        ("2026-03-02T09:59:59Z", "appeared", "2026-03-02T09:59:59+00:00"),
        ("2026-03-02T10:00:00Z", "renamed", "2026-03-02T10:00:00+00:00"),  # at: included
        ("2026-03-02T10:00:00", "renamed", "2026-03-02T10:00:00+00:00"),  # no offset: UTC
        ("2026-03-02T11:59:59+02:00", "appeared", "2026-03-02T09:59:59+00:00"),
        ("2026-03-02T12:00:00+02:00", "renamed", "2026-03-02T10:00:00+00:00"),
        ("2026-03-02 12:00", "renamed", "2026-03-02T12:00:00+00:00"),
        ("2030-01-01", "rollback", "2030-01-01T23:59:59+00:00"),
    ],
)
def test_show_as_of_a_date(story: dict[str, str], at: str, commit: str, instant: str) -> None:
    head = shown("--at", at)[0]
    assert head.startswith(f"{DOMAIN} at commit {story[commit]} of ")
    assert head.endswith(f", the last change at or before {instant}")


def test_show_as_json(story: dict[str, str]) -> None:
    result = invoke("show", DOMAIN, "--at", "2026-03-01T12:00:00Z", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {k: v for k, v in document.items() if k != "recipients"} == {
        "format_version": 1,
        "domain": DOMAIN,
        "commit": story["appeared"],
        "committed": day(1),
        "action": "apply",
        "as_of": "2026-03-01T12:00:00+00:00",
        "hold": None,
    }
    assert document["recipients"]["user02@example.com"]["name"] == "User 02"
    assert list(document["recipients"]) == sorted(document["recipients"])
    assert len(document["recipients"]) == 6


def assert_error(args: list[str], code: int, message: str) -> None:
    result = invoke("show", *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_show_before_the_first_state_commit(story: dict[str, str]) -> None:
    assert_error(
        [DOMAIN, "--at", "2026-03-01T09:59:59Z"],
        1,
        f"Error: {DOMAIN} had no state yet at 2026-03-01T09:59:59Z: the first commit of "
        f"state/{DOMAIN}.yaml is {story['appeared'][:10]} of {day(1)}\n"
        "  give a later date or revision\n",
    )
    # A revision before it: the inventory's first commit.
    assert_error([DOMAIN, "--at", "HEAD~8"], 1, f"{DOMAIN} had no state yet at HEAD~8")


def test_show_errors(story: dict[str, str]) -> None:
    assert_error([DOMAIN, "--at", "no-such-rev"], 1, "Error: 'no-such-rev' is not a commit in ")
    assert_error(
        ["example.org"],
        1,
        "Error: example.org has no committed state (state/example.org.yaml is in no commit)\n"
        "  check the domain name; `reconciler history` lists the domains with a state\n",
    )
    assert_error([DOMAIN, "--at", "2026-02-30"], 2, "'2026-02-30' is not an ISO date")
    assert_error([DOMAIN, "--format", "yaml"], 2, "'yaml' is not one of")


def test_show_when_the_state_file_was_deleted(story: dict[str, str]) -> None:
    git(Path.cwd(), "rm", "--quiet", f"state/{DOMAIN}.yaml")
    git(Path.cwd(), "commit", "--quiet", "-m", "Drop the domain")
    deleted = git(Path.cwd(), "rev-parse", "--short=10", "HEAD")
    assert_error([DOMAIN], 1, f"was deleted by commit {deleted} of ")
    assert shown("--at", "HEAD~1")[-1] == "4 recipients"


def test_parse_instant() -> None:
    assert parse_instant("HEAD~2") is None
    assert parse_instant("3f2a9c1") is None
    assert parse_instant("20260301") is None  # a revision (all digits), not a date
    assert parse_instant("1970-01-01") == 86399
    assert parse_instant("1970-01-01T00:00:01Z") == 1
    assert parse_instant("1970-01-01T01:00:00.9+01:00") == 0
    with pytest.raises(ValueError, match=r"month must be in 1\.\.12"):
        parse_instant("2026-13-01")
