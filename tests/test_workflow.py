"""plan / apply / history / rollback / resume against real Git repositories (DESIGN.md §4-§6).

Every failure path checks the promise "a refused or failed run changes no file and makes no
commit": HEAD unchanged, ``git status --porcelain`` empty, the state file as it was.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from gitrepo import (
    DOMAIN,
    User,
    add_domain,
    add_hook,
    change_directory,
    commit_all,
    commit_count,
    commit_message,
    git,
    head,
    invoke,
    is_ancestor,
    isolate_git,
    ldif_path,
    make_repo,
    spec_path,
    state_path,
    status,
    users,
    write_ldif,
)

from reconciler import gitstore

pytestmark = pytest.mark.git

# The directory after the first sync: user03 left, user02 was renamed, user04 joined.
SECOND_DIRECTORY = [
    users(3)[0],
    User("user02", name="Renamed Two", aliases=("user02.alias",)),
    User("user04", name="User 04"),
]
SECOND_PLAN = [
    "  - user03.alias@example.com  alias → user03@example.com",
    '  - user03@example.com  mailbox "User 03"',
    '  ~ user02@example.com  name: "User 02" → "Renamed Two"',
    '  + user04@example.com  mailbox "User 04"',
    "example.com: 1 to add, 1 to update, 2 to remove (6 → 5 recipients)",
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed repository with 3 users, never synced; the current directory."""
    path = make_repo(tmp_path, users(3))
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def synced(repo: Path) -> Path:
    """``repo`` after a first apply."""
    assert invoke("apply").exit_code == 0
    return repo


@pytest.fixture
def synced_twice(synced: Path) -> Path:
    """``repo`` after two applies: 3 users, then SECOND_DIRECTORY."""
    change_directory(synced, SECOND_DIRECTORY)
    assert invoke("apply").exit_code == 0
    return synced


def recipients(text: str) -> list[str]:
    """The recipient lines of a state file's text."""
    return [line for line in text.splitlines() if line.startswith("  ")]


def state_text(repo: Path) -> str:
    return state_path(repo).read_text(encoding="utf-8")


def state_at(repo: Path, rev: str) -> str:
    return git(repo, "show", f"{rev}:state/{DOMAIN}.yaml")


def trailer(repo: Path, key: str, rev: str = "HEAD") -> str:
    """A trailer as Git itself parses it (so they really are trailers)."""
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", rev)


def plan_lines(output: str) -> list[str]:
    """Plan output without its header line (which names the source) and the totals line."""
    return output.splitlines()[1:-1]


class Untouched:
    """Remembers HEAD, the branch and the state file, to check a run changed nothing."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.head = head(repo)
        self.count = commit_count(repo)
        self.branch = git(repo, "symbolic-ref", "-q", "HEAD")
        self.state = state_text(repo) if state_path(repo).exists() else None

    def check(self) -> None:
        assert head(self.repo) == self.head
        assert commit_count(self.repo) == self.count
        assert git(self.repo, "symbolic-ref", "-q", "HEAD") == self.branch
        assert status(self.repo) == ""
        if self.state is None:
            assert not state_path(self.repo).exists()
        else:
            assert state_text(self.repo) == self.state


@pytest.fixture
def untouched(repo: Path) -> Iterator[Untouched]:
    """Checks, after the test, that nothing changed since the test started using it."""
    snapshot = Untouched(repo)
    yield snapshot
    snapshot.check()


# --- the first sync --------------------------------------------------------------------------


def test_first_apply_writes_the_state_in_exactly_one_commit(repo: Path) -> None:
    before = head(repo)
    result = invoke("apply")
    assert result.exit_code == 0, result.output

    assert commit_count(repo) == 2
    assert git(repo, "rev-parse", "HEAD^") == before
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == f"state/{DOMAIN}.yaml"
    assert status(repo) == ""
    assert result.stdout.splitlines()[-1] == f"Committed {DOMAIN} as {head(repo)[:10]}"

    message = commit_message(repo)
    summary = "example.com: 6 to add, 0 to update, 0 to remove (0 → 6 recipients)"
    assert message.splitlines()[0] == summary
    assert '  + user01@example.com  mailbox "User 01"' in message.splitlines()
    assert "  + user03.alias@example.com  alias → user03@example.com" in message.splitlines()
    assert trailer(repo, "Reconciler-Domain") == DOMAIN
    assert trailer(repo, "Reconciler-Action") == "apply"
    assert trailer(repo, "Reconciler-Counts") == "add=6 update=0 remove=0"
    assert re.fullmatch(r"[0-9a-f]{16}", trailer(repo, "Reconciler-Plan-Digest"))

    text = state_text(repo)
    assert text == state_at(repo, "HEAD") + "\n"  # git show strips nothing but the final newline
    lines = text.splitlines()
    assert lines[:4] == [
        f"# Managed by reconciler from inventories/{DOMAIN}.yaml. Do not edit by hand.",
        f"domain: {DOMAIN}",
        "hold: null",
        "recipients:",
    ]
    assert recipients(text) == sorted(recipients(text))
    assert '  user01.alias@example.com: {"kind": "alias", "target": "user01@example.com"}' in lines
    assert any(
        line.startswith('  user02@example.com: {"kind": "mailbox", "name": "User 02", "id": "')
        for line in lines
    )


def test_apply_then_plan_shows_nothing_and_a_second_apply_commits_nothing(synced: Path) -> None:
    before, text = head(synced), state_text(synced)

    plan = invoke("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert plan_lines(plan.stdout) == ["example.com: in sync (6 recipients)"]

    again = invoke("apply")
    assert again.exit_code == 0, again.output
    assert "Committed" not in again.stdout
    assert head(synced) == before
    assert state_text(synced) == text  # byte-identical
    assert status(synced) == ""


def test_plan_never_writes(repo: Path) -> None:
    before = head(repo)
    for args in (["plan"], ["plan", "--format", "json"], ["plan", "--detailed-exitcode"]):
        assert invoke(*args).exit_code in (0, 3)
        assert head(repo) == before
        assert status(repo) == ""
        assert not state_path(repo).exists()

    assert invoke("apply").exit_code == 0
    change_directory(repo, SECOND_DIRECTORY)
    snapshot = Untouched(repo)
    assert invoke("plan", "--detailed-exitcode").exit_code == 3
    assert invoke("plan", "--format", "json").exit_code == 0
    snapshot.check()


# --- a changed directory ---------------------------------------------------------------------


def test_a_changed_directory_gives_add_remove_update_and_a_second_commit(synced: Path) -> None:
    first_sync = head(synced)
    export = change_directory(synced, SECOND_DIRECTORY)

    plan = invoke("plan")
    assert plan.exit_code == 0
    assert plan_lines(plan.stdout) == SECOND_PLAN

    applied = invoke("apply")
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines()[1:-1] == SECOND_PLAN
    assert commit_count(synced) == 4
    assert git(synced, "rev-parse", "HEAD^") == export
    assert is_ancestor(synced, first_sync)
    assert commit_message(synced).splitlines()[0] == SECOND_PLAN[-1]
    assert trailer(synced, "Reconciler-Counts") == "add=1 update=1 remove=2"

    text = state_text(synced)
    addresses = [line.split(":")[0].strip() for line in recipients(text)]
    assert addresses == [
        "user01.alias@example.com",
        "user01@example.com",
        "user02.alias@example.com",
        "user02@example.com",
        "user04@example.com",
    ]
    assert '"name": "Renamed Two"' in text
    # Only the changed recipients' lines changed: the state diffs well in a pull request.
    diff = git(synced, "diff", "--numstat", "HEAD^", "HEAD", "--", "state")
    assert diff == f"2\t3\tstate/{DOMAIN}.yaml"  # +user04, ~user02; -user03 and its alias

    assert invoke("plan", "--detailed-exitcode").exit_code == 0


def test_history_lists_the_syncs_newest_first(synced_twice: Path) -> None:
    result = invoke("history")
    assert result.exit_code == 0, result.output
    second, first = head(synced_twice), git(synced_twice, "rev-parse", "HEAD~2")
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    date = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert re.fullmatch(
        rf"{date}  {second[:10]}  {DOMAIN}  apply     add=1 update=1 remove=2", lines[0]
    )
    assert re.fullmatch(
        rf"{date}  {first[:10]}  {DOMAIN}  apply     add=6 update=0 remove=0", lines[1]
    )
    assert invoke("history", DOMAIN).stdout == result.stdout


def test_history_of_a_domain_never_synced_is_empty(repo: Path) -> None:
    result = invoke("history", DOMAIN)
    assert (result.exit_code, result.stdout) == (0, "")


def test_one_commit_per_domain(repo: Path) -> None:
    add_domain(repo, "example.org", users(2))
    before = head(repo)
    result = invoke("apply")
    assert result.exit_code == 0, result.output
    commits = git(repo, "rev-list", f"{before}..HEAD").splitlines()
    assert len(commits) == 2
    committed = [line for line in result.stdout.splitlines() if line.startswith("Committed ")]
    assert (
        committed
        == [
            f"Committed {DOMAIN} as {commits[1][:10]}",  # domains in order, newest commit first
            f"Committed example.org as {commits[0][:10]}",
        ]
    )
    for sha in commits:
        (changed,) = git(repo, "show", "--name-only", "--format=", sha).splitlines()
        domain = trailer(repo, "Reconciler-Domain", sha)
        assert changed == f"state/{domain}.yaml"
    assert {trailer(repo, "Reconciler-Domain", sha) for sha in commits} == {DOMAIN, "example.org"}
    assert status(repo) == ""
    assert invoke("plan", "--detailed-exitcode").exit_code == 0


def test_one_refused_domain_stops_the_whole_run(synced: Path) -> None:
    """Guards are checked for every domain before anything is written."""
    add_domain(synced, "example.org", users(2))
    change_directory(synced, [*users(3), User("dup", aliases=("user01",))])
    snapshot = Untouched(synced)
    result = invoke("apply")
    assert result.exit_code == 4
    assert "conflict: user01@example.com is claimed by 2 entries" in result.stderr
    assert not (synced / "state" / "example.org.yaml").exists()
    snapshot.check()
    assert invoke("apply", "example.org").exit_code == 0  # the other domain alone may go


# --- rollback, hold and resume ---------------------------------------------------------------


def test_rollback_restores_the_state_before_the_last_sync_as_a_new_commit(
    synced_twice: Path,
) -> None:
    repo = synced_twice
    first_sync, export, second_sync = (git(repo, "rev-parse", f"HEAD~{n}") for n in (2, 1, 0))

    result = invoke("rollback", DOMAIN)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"Committed the rollback of {DOMAIN} as {head(repo)[:10]}; "
        f"{DOMAIN} is on hold until `reconciler resume {DOMAIN}`"
    )

    # A new commit on top: history is not rewritten.
    assert commit_count(repo) == 5
    assert git(repo, "rev-parse", "HEAD^") == second_sync
    assert is_ancestor(repo, first_sync) and is_ancestor(repo, second_sync)
    assert status(repo) == ""

    text = state_text(repo)
    assert recipients(text) == recipients(state_at(repo, first_sync))
    hold = re.search(r'^hold: \{"reason": "rolled back to (\w+)", "since": "(.+)"\}$', text, re.M)
    assert hold is not None
    assert hold.group(1) == export[:10]  # the parent of the last sync
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", hold.group(2))

    message = commit_message(repo)
    assert message.splitlines()[0] == f"Roll back {DOMAIN} to {export[:10]}"
    assert trailer(repo, "Reconciler-Action") == "rollback"
    assert trailer(repo, "Reconciler-Rollback-To") == export
    assert trailer(repo, "Reconciler-Counts") == "add=2 update=1 remove=1"


def test_a_held_domain_refuses_apply_and_plan_until_resume(synced_twice: Path) -> None:
    repo = synced_twice
    second_sync_text = state_text(repo)
    assert invoke("rollback", DOMAIN).exit_code == 0
    held = Untouched(repo)

    applied = invoke("apply")
    assert applied.exit_code == 4
    assert applied.stdout == ""
    assert applied.stderr.startswith("Error: apply refused, nothing was applied:")
    assert f"{DOMAIN} is on hold since " in applied.stderr
    assert f"`reconciler resume {DOMAIN}`" in applied.stderr
    assert "Traceback" not in applied.stderr
    held.check()

    for args in (["plan"], ["plan", "--detailed-exitcode"], ["plan", "--format", "json"]):
        plan = invoke(*args)
        assert plan.exit_code == 4, args
        assert f"reconciler resume {DOMAIN}" in plan.stdout
    assert "  REFUSED: example.com is on hold since " in invoke("plan").stdout
    held.check()

    resumed = invoke("resume", DOMAIN)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout == f"Resumed {DOMAIN} (commit {head(repo)[:10]})\n"
    assert commit_count(repo) == held.count + 1
    assert "hold: null" in state_text(repo).splitlines()
    assert recipients(state_text(repo)) == recipients(held.state or "")  # only the hold changed
    assert trailer(repo, "Reconciler-Action") == "resume"
    assert status(repo) == ""

    # Resuming again is a no-op: no commit.
    again = invoke("resume", DOMAIN)
    assert again.exit_code == 0
    assert commit_count(repo) == held.count + 1
    assert "is not on hold" in again.stderr

    # The next sync re-applies what the directory says.
    reapplied = invoke("apply")
    assert reapplied.exit_code == 0, reapplied.output
    assert commit_count(repo) == held.count + 2
    assert trailer(repo, "Reconciler-Counts") == "add=1 update=1 remove=2"
    assert recipients(state_text(repo)) == recipients(second_sync_text)
    assert invoke("plan", "--detailed-exitcode").exit_code == 0

    actions = [line.split()[3] for line in invoke("history").stdout.splitlines()]
    assert actions == ["apply", "resume", "rollback", "apply", "apply"]


def test_rollback_to_a_revision(synced_twice: Path) -> None:
    repo = synced_twice
    first_sync = git(repo, "rev-parse", "HEAD~2")
    result = invoke("rollback", DOMAIN, "--to", first_sync[:12])
    assert result.exit_code == 0, result.output
    assert recipients(state_text(repo)) == recipients(state_at(repo, first_sync))
    assert f'"reason": "rolled back to {first_sync[:10]}"' in state_text(repo)
    assert trailer(repo, "Reconciler-Rollback-To") == first_sync
    assert invoke("apply").exit_code == 4


def test_rollback_to_before_the_first_sync_empties_the_state(synced: Path) -> None:
    inventory_commit = git(synced, "rev-parse", "HEAD^")
    result = invoke("rollback", DOMAIN, "--to", "HEAD^")
    assert result.exit_code == 0, result.output
    assert recipients(state_text(synced)) == []
    assert "recipients: {}" in state_text(synced).splitlines()
    assert f"rolled back to {inventory_commit[:10]}" in state_text(synced)
    assert trailer(synced, "Reconciler-Counts") == "add=0 update=0 remove=6"
    # The sync guards (here: "no recipients") are not for a deliberate rollback.
    assert "REFUSED" not in result.stdout
    assert "REFUSED" not in commit_message(synced)


def test_rollback_without_a_sync_commit_is_refused(repo: Path, untouched: Untouched) -> None:
    result = invoke("rollback", DOMAIN)
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"Error: {DOMAIN} has no sync commit to roll back",
        "  name a revision with --to REV",
    ]


def test_rollback_to_an_unknown_revision(synced: Path) -> None:
    snapshot = Untouched(synced)
    result = invoke("rollback", DOMAIN, "--to", "no-such-rev")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: 'no-such-rev' is not a commit in ")
    snapshot.check()


def test_rollback_of_a_domain_without_state_writes_nothing(synced: Path) -> None:
    """A mistyped domain must not get a state file (and a hold) of its own."""
    snapshot = Untouched(synced)
    result = invoke("rollback", "exmaple.com", "--to", "HEAD")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: exmaple.com has no state file ")
    assert not (synced / "state" / "exmaple.com.yaml").exists()
    snapshot.check()


# --- failure paths: nothing half-written, no stray commit ------------------------------------


def test_a_refusing_pre_commit_hook_on_the_first_sync_leaves_no_file(
    repo: Path, untouched: Untouched
) -> None:
    add_hook(repo, "pre-commit", "echo 'pre-commit: not today' >&2\nexit 1")
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: example.com: git commit failed")
    assert "pre-commit: not today" in result.stderr
    assert not state_path(repo).exists()
    assert list((repo / "state").glob("*")) == []  # no temp file left either


def test_a_refusing_pre_commit_hook_restores_the_previous_state(synced: Path) -> None:
    change_directory(synced, SECOND_DIRECTORY)
    add_hook(synced, "pre-commit", "exit 1")
    snapshot = Untouched(synced)
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: example.com: git commit failed")
    snapshot.check()
    assert state_text(synced) == state_at(synced, "HEAD") + "\n"
    assert git(synced, "diff", "--cached", "--name-only") == ""


def test_hooks_run_and_see_the_state_file(synced: Path) -> None:
    """Commits go through `git commit`: a commit-msg hook sees the message reconciler wrote."""
    seen = synced / ".git" / "seen-message"
    add_hook(synced, "commit-msg", f'cp "$1" "{seen}"')
    change_directory(synced, SECOND_DIRECTORY)
    assert invoke("apply").exit_code == 0
    assert seen.read_text("utf-8").splitlines()[0] == SECOND_PLAN[-1]


def test_a_pre_commit_hook_sees_a_whole_work_tree_with_only_the_state_file_staged(
    synced: Path,
) -> None:
    """The run's own work tree holds every committed file (the state files written for the
    run are not checked out first, only written): a hook sees what a commit by hand shows."""
    seen = synced / ".git" / "seen-status"
    add_hook(synced, "pre-commit", f'git status --porcelain --untracked-files=all > "{seen}"')
    change_directory(synced, SECOND_DIRECTORY)
    assert invoke("apply").exit_code == 0
    assert seen.read_text("utf-8").splitlines() == ["M  state/example.com.yaml"]


def test_a_hook_that_changes_the_state_file_unstaged_leaves_the_work_tree_as_committed(
    synced: Path,
) -> None:
    """The committed files are moved into the work tree from the run's own; one a hook
    changed after it was staged is checked out as committed instead."""
    change_directory(synced, SECOND_DIRECTORY)
    # (in the run's work tree only: the commits the test set-up makes run the hook too)
    add_hook(
        synced,
        "pre-commit",
        'case "$PWD" in */reconciler-apply)\n'
        '  echo "# added by a hook" >> state/example.com.yaml;;\nesac',
    )
    result = invoke("apply")
    assert result.exit_code == 0, result.stderr
    assert state_text(synced) == state_at(synced, "HEAD") + "\n"
    assert "added by a hook" not in state_text(synced)
    assert git(synced, "status", "--porcelain") == ""


def test_a_broken_ldif_export(synced: Path) -> None:
    text = ldif_path(synced).read_text("utf-8")
    broken = re.sub(r"(?m)^objectGUID:: .*$", "objectGUID:: !!!not*base64", text)
    ldif_path(synced).write_text(broken, "utf-8")
    commit_all(synced, "Broken export")
    snapshot = Untouched(synced)
    first_user = broken.splitlines().index("dn: CN=user01,OU=Staff,DC=example,DC=com") + 1

    for command in ("plan", "apply"):
        result = invoke(command)
        assert result.exit_code == 1, command
        assert result.stdout == ""
        assert result.stderr.startswith(
            f"Error: {ldif_path(synced)}:{first_user}: unreadable LDIF record: "
        )
        assert "Invalid base64" in result.stderr
    snapshot.check()


def test_a_broken_spec_applies_nothing(synced: Path) -> None:
    spec = spec_path(synced)
    spec.write_text(spec.read_text("utf-8") + "users:\n  filter: '(&(mail=*)'\n", "utf-8")
    commit_all(synced, "Broken filter")
    snapshot = Untouched(synced)
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: 1 problem in the specs:")
    assert f"{spec}:6:11: invalid LDAP filter" in result.stderr
    snapshot.check()


def test_a_hand_edit_in_state_is_refused_and_survives(synced: Path) -> None:
    change_directory(synced, SECOND_DIRECTORY)
    before = head(synced)
    edited = state_text(synced).replace('"User 01"', '"Hand Edited"')
    state_path(synced).write_text(edited, "utf-8")

    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: uncommitted changes in state/{DOMAIN}.yaml",
        "  commit or stash them first; nothing was applied",
    ]
    assert state_text(synced) == edited
    assert head(synced) == before
    assert status(synced) == f" M state/{DOMAIN}.yaml"

    # rollback and resume refuse it too.
    assert invoke("rollback", DOMAIN).exit_code == 1
    assert invoke("resume", DOMAIN).exit_code == 1
    assert state_text(synced) == edited
    assert head(synced) == before


def test_a_hand_edited_state_cannot_break_or_forge_plan_lines(synced: Path) -> None:
    """The state is written by reconciler only, but a pull request can edit it: a newline or a
    terminal escape in an address or an alias target is shown quoted, never printed as is."""
    header, _, body = state_text(synced).partition("recipients:\n")
    forged = (
        '  "a\\u001b[31mx@example.com": '
        '{"kind": "alias", "target": "evil\\n+ fake@example.com  mailbox"}\n'
    )
    state_path(synced).write_text(header + "recipients:\n" + forged + body, "utf-8")
    commit_all(synced, "Hand edit")

    result = invoke("plan")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(line.isprintable() for line in lines)
    assert '  - "a\\u001b[31mx@example.com"  alias → "evil\\n+ fake@example.com  mailbox"' in lines
    assert not any("fake" in line for line in lines if "evil" not in line)


def test_an_uncommitted_directory_export_is_refused(synced: Path) -> None:
    """apply acts on what is committed: an edited but uncommitted export is refused."""
    before = head(synced)
    write_ldif(synced, SECOND_DIRECTORY)
    result = invoke("apply")
    assert result.exit_code == 1
    assert f"uncommitted changes in inventories/data/{DOMAIN}.ldif" in result.stderr
    assert head(synced) == before


def test_a_detached_head_is_refused(synced: Path) -> None:
    change_directory(synced, SECOND_DIRECTORY)
    git(synced, "checkout", "--quiet", "--detach")
    before = head(synced)
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"Error: {synced} has a detached HEAD"
    assert head(synced) == before
    assert git(synced, "rev-parse", "main") == before
    assert status(synced) == ""


def test_an_unfinished_merge_is_refused(synced: Path) -> None:
    readme = synced / "README.md"
    git(synced, "checkout", "--quiet", "-b", "other")
    readme.write_text("other\n", "utf-8")
    commit_all(synced, "Other README")
    git(synced, "checkout", "--quiet", "main")
    readme.write_text("main\n", "utf-8")
    commit_all(synced, "Main README")
    merge = subprocess.run(
        ["git", "-C", str(synced), "merge", "--quiet", "other"], capture_output=True, check=False
    )
    assert merge.returncode != 0, "the merge should stop on a conflict"
    before = head(synced)
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {synced} is in the middle of a merge")
    assert head(synced) == before


def test_an_empty_directory_read_is_refused(synced: Path) -> None:
    change_directory(synced, [])
    snapshot = Untouched(synced)
    reason = "the directory gave no recipients while the state has 6"

    plan = invoke("plan")
    assert plan.exit_code == 4
    assert f"  REFUSED: {reason}; check the source and the users filter" in plan.stdout
    assert invoke("plan", "--detailed-exitcode").exit_code == 4

    applied = invoke("apply")
    assert applied.exit_code == 4
    assert applied.stderr.splitlines() == [
        "Error: apply refused, nothing was applied:",
        f"  {reason}; check the source and the users filter",
    ]
    snapshot.check()


def test_an_address_claimed_twice_is_refused_naming_both_entries(synced: Path) -> None:
    dup = User("dup", name="Dup", aliases=("user01",))
    change_directory(synced, [*users(3), dup])
    snapshot = Untouched(synced)
    conflict = (
        "conflict: user01@example.com is claimed by 2 entries: "
        "CN=dup,OU=Staff,DC=example,DC=com; CN=user01,OU=Staff,DC=example,DC=com"
    )

    plan = invoke("plan")
    assert plan.exit_code == 4
    assert f"  REFUSED: {conflict}" in plan.stdout.splitlines()

    applied = invoke("apply")
    assert applied.exit_code == 4
    assert applied.stderr.splitlines() == [
        "Error: apply refused, nothing was applied:",
        f"  {conflict}",
    ]
    snapshot.check()


def test_a_second_run_holding_the_lock(synced: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    change_directory(synced, SECOND_DIRECTORY)
    monkeypatch.setattr(gitstore, "LOCK_TIMEOUT_SECONDS", 0.2)
    lock_file = synced / ".git" / gitstore.LOCK_FILE
    snapshot = Untouched(synced)
    with FileLock(str(lock_file)):
        for args in (["apply"], ["rollback", DOMAIN], ["resume", DOMAIN]):
            result = invoke(*args)
            assert result.exit_code == 1, args
            assert result.stderr.splitlines() == [
                f"Error: another reconciler run holds {lock_file}",
                "  wait for it to finish, then run again",
            ]
        assert invoke("plan").exit_code == 0  # plan takes no lock: it never writes
    snapshot.check()
    assert invoke("apply").exit_code == 0  # released: the next run goes ahead
    assert commit_count(synced) == snapshot.count + 1
