"""Publishing a run's commits all at once, and finishing or discarding a run that was killed.

A run's commits are made with ``git commit`` (hooks and signing apply) in a scratch work tree
of the commit the run started from, one commit per domain. Only when every domain is committed
is the branch moved, by one compare-and-swap (``git update-ref REF NEW OLD``): if the branch
moved meanwhile, nothing is published. Then the user's work tree is brought up to the new
commit for the state files, and only those.

A run killed before the swap leaves the scratch work tree (removed by the next run; nothing was
published). A run killed after the swap but before the work tree was updated leaves a journal
in the Git directory: the next run finishes the update, unless the file was edited by hand in
between, which it refuses and keeps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import GitError
from reconciler.gitstore import GitStore
from reconciler.state import write_state

log = logging.getLogger("reconciler")

WORKTREE = "reconciler-apply"  # under the Git directory, so no status ever shows it
JOURNAL = "reconciler-apply.json"


@dataclass
class Transaction:
    """Commits made on top of ``base``, published to ``ref`` together at the end."""

    store: GitStore
    ref: str
    base: str
    new_branch: bool  # the ref must not exist yet (apply --branch)
    worktree: Path
    head: str = ""
    paths: list[Path] = field(default_factory=list)

    def commit(self, relative: Path, text: str | Iterable[str], message: str) -> str:
        """Write ``text`` (or its pieces) to ``relative`` in the scratch work tree and commit
        it."""
        path = self.worktree / relative
        write_state(path, text, durable=False)  # (what must last is the commit, git's)
        _backdate(path)
        self.head = self.store.commit_in(self.worktree, relative, message)
        self.paths.append(relative)
        return self.head


@contextlib.contextmanager
def transaction(
    store: GitStore, *, branch: str | None = None, writes: Sequence[Path] = ()
) -> Iterator[Transaction]:
    """Commits on top of HEAD, published when the block ends without an error.

    ``branch``: publish them to that new branch (which must not exist) and leave the current
    branch and work tree alone; otherwise to the checked-out branch, whose work tree then
    holds the committed files. ``writes``: the files (relative paths) the commits will
    write, not checked out for them first.
    """
    base = store.head()
    if base is None:
        raise GitError(f"{store.root} has no commit yet", "commit the inventory first")
    if branch is not None:
        ref, new_branch = store.branch_ref(branch), True
        if store.ref(ref) is not None:
            raise GitError(f"branch {branch} already exists", "name a new branch")
    else:
        current = store.branch()
        if current is None:
            raise GitError(f"{store.root} has a detached HEAD", "check out a branch first")
        ref, new_branch = current, False
    worktree = store.git_dir / WORKTREE
    store.add_worktree(worktree, base, writes)
    try:
        txn = Transaction(store, ref, base, new_branch, worktree, head=base)
        yield txn
        if txn.head != base:
            _publish(txn)
    finally:
        store.remove_worktree(worktree)


def _publish(txn: Transaction) -> None:
    store = txn.store
    journal = store.git_dir / JOURNAL
    record = {
        "ref": txn.ref,
        "old": None if txn.new_branch else txn.base,
        "new": txn.head,
        "paths": [p.as_posix() for p in txn.paths],
        "sync": not txn.new_branch,
    }
    write_state(journal, json.dumps(record, indent=1) + "\n")
    try:
        store.update_ref(txn.ref, txn.head, None if txn.new_branch else txn.base)
    except GitError:
        journal.unlink(missing_ok=True)
        raise
    if not txn.new_branch:
        try:
            _move_into_place(txn)
        except GitError as exc:
            raise GitError(
                f"committed {txn.head[:10]} but could not update the work tree: {exc.message}",
                "run reconciler again to finish (it only writes the state files)",
            ) from None
    journal.unlink()


def _move_into_place(txn: Transaction) -> None:
    """Make the work tree and the index hold the committed files: the scratch work tree's
    copies moved over (a rename, where checking them out would write them again), and
    checked out after all if a hook left a file other than it committed it."""
    store = txn.store
    try:
        for relative in txn.paths:
            target = store.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            (txn.worktree / relative).replace(target)
    except OSError:  # another file system (a Git directory elsewhere), say
        pass
    else:
        store.stage(txn.paths)
        if store.staged_as("HEAD", txn.paths):
            return
    store.checkout_paths("HEAD", txn.paths)


def _backdate(path: Path, seconds: int = 2) -> None:
    """Set the modification time of a file just written a little in the past. Git takes a
    file whose time is not older than its index's (to the second) as perhaps changed since
    it was indexed, and reads it again to be sure: for a state file of tens of megabytes,
    at every commit and every `git status` after an apply."""
    when = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(when, when))


def unfinished(git_dir: Path) -> str | None:
    """What a killed run left for the next apply to finish (for `plan` to warn), or None."""
    if not (git_dir / JOURNAL).exists():
        return None
    return (
        "an interrupted apply published its commits but did not update the work tree; "
        "`reconciler apply` finishes it (this plan compares with the work tree as it is)"
    )


def recover(store: GitStore) -> list[str]:
    """Finish or discard what a killed run left behind; what was done, for the log.

    Raises GitError, touching nothing, when a state file was edited by hand after the killed
    run had published its commit.
    """
    done: list[str] = []
    journal = store.git_dir / JOURNAL
    if journal.exists():
        done.append(_finish(store, journal))
        journal.unlink()
    worktree = store.git_dir / WORKTREE
    if worktree.exists():
        store.remove_worktree(worktree)
        done.append("removed the scratch work tree of an interrupted run (it published nothing)")
    return done


def _finish(store: GitStore, journal: Path) -> str:
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        ref, old, new = record["ref"], record["old"], record["new"]
        paths = [Path(p) for p in record["paths"]]
        sync = bool(record["sync"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GitError(
            f"{journal} (left by an interrupted run) is unreadable: {exc}",
            "check `git log` and `git status`, then delete the file",
        ) from None
    if store.ref(ref) != new:
        return f"an interrupted run had not moved {ref}; nothing of it was published"
    if not sync or store.branch() != ref:
        return f"an interrupted run published {new[:10]} to {ref}"
    for path in paths:
        now = store.hash_file(path)
        if now not in (store.blob(old, path), store.blob(new, path)):
            raise GitError(
                f"{path} was changed by hand after an interrupted run committed {new[:10]}",
                f"keep the edit (commit or stash it) or drop it (`git checkout HEAD -- {path}`), "
                "then run again",
            )
    store.checkout_paths("HEAD", paths)
    names = ", ".join(p.as_posix() for p in paths)
    return f"finished an interrupted run: {ref} was at {new[:10]}; updated {names}"
