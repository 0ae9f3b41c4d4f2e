"""One run at a time, compare-and-swap, and runs killed mid-apply: real processes, real Git.

The runs under test are real `python -m reconciler` processes. Git hooks hold them at the
moment a test needs (a pre-commit hook while the commit is made, a reference-transaction hook
just after the branch moved) until the test lets them go or kills them with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gitrepo import (
    DOMAIN,
    add_hook,
    change_directory,
    commit_count,
    git,
    head,
    invoke,
    isolate_git,
    make_repo,
    state_path,
    status,
    users,
)
from test_workflow import Untouched, state_text, trailer

from reconciler import transaction

pytestmark = pytest.mark.git

WAIT = 30.0  # seconds a test waits for a process to reach a point; never reached when all is well


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """3 users synced, then one leaves: the next apply has 2 removals to commit."""
    path = make_repo(tmp_path, users(3))
    monkeypatch.chdir(path)
    assert invoke("apply").exit_code == 0
    change_directory(path, users(3)[1:])
    return path


class Run:
    """`python -m reconciler ARGS` in its own process group (so SIGKILL reaches its hooks)."""

    def __init__(self, repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            cwd=repo,
            env={**environment, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=WAIT)
        return self.process.returncode, stdout, stderr

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=WAIT)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Processes a test starts; any still running at the end is killed (by its own pid)."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.kill()


def wait_for(path: Path, run: Run) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if run.process.poll() is not None:
            raise AssertionError(f"the run ended before {path.name}: {run.finish()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.02)


def hold_hook(repo: Path, name: str, marker: Path, release: Path, condition: str = "") -> None:
    """A hook that creates ``marker`` then waits until ``release`` exists."""
    wait = f'touch "{marker}"; n=0; while [ ! -e "{release}" ] && [ $n -lt 600 ]; do ' + (
        "sleep 0.05; n=$((n+1)); done"
    )
    add_hook(repo, name, f"{condition}{wait}\nexit 0")


def scratch_worktrees(repo: Path) -> int:
    return git(repo, "worktree", "list", "--porcelain").count("worktree ") - 1


# --- one run at a time --------------------------------------------------------------------------


def test_a_second_apply_waits_then_gives_up_naming_the_holder(
    repo: Path, tmp_path: Path, runs: list[Run]
) -> None:
    marker, release = tmp_path / "committing", tmp_path / "release"
    hold_hook(repo, "pre-commit", marker, release)
    before = commit_count(repo)

    first = Run(repo, "apply")
    runs.append(first)
    wait_for(marker, first)  # the first run holds the lock and is committing
    second = Run(repo, "apply", env={"RECONCILER_LOCK_TIMEOUT": "0.5"})
    runs.append(second)
    code, stdout, stderr = second.finish()
    assert code == 1
    assert stdout == ""
    lines = stderr.splitlines()
    lock = re.escape(str(repo / ".git" / "reconciler.lock"))
    assert re.fullmatch(
        rf"Error: another reconciler run \(pid {first.pid} on [^,]+, `reconciler apply`, "
        rf"since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\) holds {lock}",
        lines[0],
    ), lines[0]
    assert lines[1:] == ["  wait for it to finish, then run again"]

    release.touch()
    code, stdout, stderr = first.finish()
    assert code == 0, stderr
    assert commit_count(repo) == before + 1
    assert status(repo) == ""
    assert not (repo / ".git" / "reconciler.lock.owner").exists()


def test_two_applies_started_together_make_exactly_one_commit(repo: Path, runs: list[Run]) -> None:
    before = commit_count(repo)
    both = [Run(repo, "apply"), Run(repo, "apply")]
    runs.extend(both)
    results = [run.finish() for run in both]
    assert [code for code, _, _ in results] == [0, 0], results
    # The one that waited planned again after the other's commit: nothing left to do.
    committed = [out for _, out, _ in results if "Committed " in out]
    assert len(committed) == 1
    assert commit_count(repo) == before + 1
    assert trailer(repo, "Reconciler-Counts") == "add=0 update=0 remove=2"
    assert status(repo) == ""
    assert invoke("plan", "--detailed-exitcode").exit_code == 0


def test_a_bad_lock_timeout(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_LOCK_TIMEOUT", "soon")
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr == "Error: RECONCILER_LOCK_TIMEOUT='soon' is not a number of seconds\n"


# --- compare-and-swap ---------------------------------------------------------------------------


def test_the_branch_is_moved_only_if_it_is_where_the_run_started(repo: Path) -> None:
    base = head(repo)
    # Someone else's commit lands on main while reconciler is committing (same tree, so the
    # work tree stays clean): the hook plays that someone.
    other = git(repo, "commit-tree", f"{base}^{{tree}}", "-p", base, "-m", "Someone else")
    add_hook(repo, "pre-commit", f"git update-ref refs/heads/main {other}")
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: refs/heads/main moved while reconciler was applying (now at {other[:10]}, "
        f"it was {base[:10]} when the run started); nothing was applied",
        "  run again: the plan is made afresh from the new commit",
    ]
    assert head(repo) == other  # theirs kept, nothing of ours on top
    assert status(repo) == ""
    assert scratch_worktrees(repo) == 0
    assert not (repo / ".git" / transaction.JOURNAL).exists()


# --- a run killed mid-apply ---------------------------------------------------------------------


def test_killed_while_committing_publishes_nothing_and_the_next_run_cleans_up(
    repo: Path, tmp_path: Path, runs: list[Run]
) -> None:
    marker = tmp_path / "committing"
    hold_hook(repo, "pre-commit", marker, tmp_path / "never")
    before = Untouched(repo)
    run = Run(repo, "apply")
    runs.append(run)
    wait_for(marker, run)  # the state is written (in the scratch work tree), not committed
    run.kill()

    before.check()  # the branch, the work tree and the state file: untouched
    assert scratch_worktrees(repo) == 1  # what the killed run left
    (repo / ".git" / "hooks" / "pre-commit").unlink()

    result = invoke("apply")
    assert result.exit_code == 0, result.output
    assert (
        "removed the scratch work tree of an interrupted run (it published nothing)"
        in result.stderr
    )
    assert commit_count(repo) == before.count + 1
    assert scratch_worktrees(repo) == 0
    assert status(repo) == ""


REF_HOOK = 'read -r line; case "$line" in *" refs/heads/main") ;; *) exit 0;; esac\n'


def _killed_after_the_branch_moved(repo: Path, tmp_path: Path, runs: list[Run]) -> str:
    """Kill an apply right after it moved main, before it updated the work tree."""
    marker = tmp_path / "moved"
    base = head(repo)
    hold_hook(
        repo,
        "reference-transaction",
        marker,
        tmp_path / "never",
        condition=f'[ "$1" = committed ] || exit 0\n{REF_HOOK}',
    )
    run = Run(repo, "apply")
    runs.append(run)
    wait_for(marker, run)
    run.kill()
    (repo / ".git" / "hooks" / "reference-transaction").unlink()
    assert git(repo, "rev-parse", "HEAD^") == base  # published…
    assert status(repo) == f"M  state/{DOMAIN}.yaml"  # …but the index and work tree are behind
    assert (repo / ".git" / transaction.JOURNAL).exists()
    return base


def test_killed_after_the_branch_moved_the_next_run_finishes(
    repo: Path, tmp_path: Path, runs: list[Run]
) -> None:
    _killed_after_the_branch_moved(repo, tmp_path, runs)
    published, count = head(repo), commit_count(repo)
    plan = invoke("plan")
    assert plan.stderr.startswith(
        "warning: an interrupted apply published its commits but did not update the work tree"
    )

    result = invoke("apply")
    assert result.exit_code == 0, result.output
    assert (
        f"finished an interrupted run: refs/heads/main was at {published[:10]}; "
        f"updated state/{DOMAIN}.yaml" in result.stderr
    )
    assert "Committed" not in result.stdout  # in sync: the killed run's commit was complete
    assert commit_count(repo) == count
    assert status(repo) == ""
    assert state_text(repo) == git(repo, "show", f"HEAD:state/{DOMAIN}.yaml") + "\n"
    assert not (repo / ".git" / transaction.JOURNAL).exists()
    assert scratch_worktrees(repo) == 0


def test_a_hand_edit_after_a_killed_run_is_refused_and_survives(
    repo: Path, tmp_path: Path, runs: list[Run]
) -> None:
    _killed_after_the_branch_moved(repo, tmp_path, runs)
    published = head(repo)
    edited = state_text(repo).replace('"User 02"', '"Edited By Hand"')
    state_path(repo).write_text(edited, "utf-8")

    for command in (["apply"], ["rollback", DOMAIN], ["resume", DOMAIN]):
        result = invoke(*command)
        assert result.exit_code == 1, command
        assert result.stderr.splitlines() == [
            f"Error: state/{DOMAIN}.yaml was changed by hand after an interrupted run "
            f"committed {published[:10]}",
            "  keep the edit (commit or stash it) or drop it "
            f"(`git checkout HEAD -- state/{DOMAIN}.yaml`), then run again",
        ]
        assert state_text(repo) == edited
        assert head(repo) == published

    git(repo, "checkout", "HEAD", "--", f"state/{DOMAIN}.yaml")  # the operator drops it
    result = invoke("apply")
    assert result.exit_code == 0, result.output
    assert status(repo) == ""
    assert head(repo) == published
