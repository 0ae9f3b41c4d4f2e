"""The Git repository that holds the state: preflight checks, the run lock, commits, history.

GitPython lives here only, imported when a repository is opened (it takes about 70 ms to import,
which a plan that commits nothing does without). Commits are made by running ``git commit`` so
that the user's hooks and commit signing apply, exactly as for a commit made by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import GitError

if TYPE_CHECKING:
    import git

LOCK_FILE = "reconciler.lock"
LOCK_OWNER_FILE = "reconciler.lock.owner"  # who holds the lock, for the one who waits
LOCK_TIMEOUT_SECONDS = 10.0
LOCK_TIMEOUT_VARIABLE = "RECONCILER_LOCK_TIMEOUT"
_UNFINISHED = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
}
_RECORD, _UNIT = "\x1e", "\x1f"
_REVS_PER_GREP = 500  # revisions named on one git grep command line


@dataclass(frozen=True)
class Commit:
    """A commit that touched a state file, with the trailers reconciler wrote into it."""

    sha: str
    date: str  # the author date, ISO 8601 with its offset
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)
    committed: str = ""  # the committer date: when the commit was made on this line of history

    @property
    def short(self) -> str:
        return self.sha[:10]


def find_git_dir(path: Path) -> Path | None:
    """The Git directory of the repository at or around ``path`` (a linked work tree's too),
    found without opening the repository; None outside one."""
    for directory in (path.resolve(), *path.resolve().parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a linked work tree or submodule: "gitdir: PATH"
            try:
                text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                return None  # unreadable: opening the repository will say why, if it comes to that
            if text.startswith("gitdir:"):
                return (directory / text.removeprefix("gitdir:").strip()).resolve()
            return None
    return None


class GitStore:
    def __init__(self, repo: git.Repo) -> None:
        self._repo = repo
        assert repo.working_tree_dir is not None
        self.root = Path(repo.working_tree_dir)
        self.git_dir = Path(repo.git_dir)

    def close(self) -> None:
        """Stop the git processes GitPython keeps running (cat-file) for this repository."""
        self._repo.close()

    def __enter__(self) -> GitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def discover(cls, path: Path) -> GitStore:
        """The repository at or around ``path``."""
        import git

        try:
            repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitError(
                f"{path} is not inside a Git repository",
                "run reconciler inside the repository that holds state/, or pass --repo DIR",
            ) from None
        if repo.bare:
            raise GitError(f"{path} is a bare repository; reconciler needs a work tree")
        return cls(repo)

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        import git

        where = ["-C", str(cwd)] if cwd is not None else []
        try:
            command = ["git", *where, *args]
            return str(self._repo.git.execute(command, with_extended_output=False))
        except git.GitCommandError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().replace("\n", " ")
            raise GitError(f"git {args[0]} failed: {detail or exc.status}") from None

    def preflight(self, watched: Sequence[Path], *, detached_ok: bool = False) -> None:
        """Refuse a detached HEAD (unless ``detached_ok``), an unfinished merge or rebase, and
        uncommitted edits under ``watched`` (applying over a hand edit would lose or commit it)."""
        for marker, what in _UNFINISHED.items():
            if (self.git_dir / marker).exists():
                raise GitError(
                    f"{self.root} is in the middle of {what}", "finish or abort it, then run again"
                )
        if self._repo.head.is_detached and not detached_ok:
            raise GitError(f"{self.root} has a detached HEAD", "check out a branch, then run again")
        relative = [str(self.relative(p)) for p in watched]
        dirty = self._git("status", "--porcelain", "--untracked-files=all", "--", *relative)
        if dirty.strip():
            files = ", ".join(line[3:] for line in dirty.splitlines()[:10])
            raise GitError(
                f"uncommitted changes in {files}", "commit or stash them first; nothing was applied"
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One run at a time per repository: wait briefly for another run, then give up
        naming it. The wait is LOCK_TIMEOUT_SECONDS, or $RECONCILER_LOCK_TIMEOUT seconds."""
        from filelock import FileLock, Timeout  # here: a plan never locks

        lock = FileLock(str(self.git_dir / LOCK_FILE))
        owner = self.git_dir / LOCK_OWNER_FILE
        try:
            lock.acquire(timeout=_lock_timeout())
        except Timeout:
            raise GitError(
                f"another reconciler run{_describe_owner(owner)} holds {self.git_dir / LOCK_FILE}",
                "wait for it to finish, then run again",
            ) from None
        try:
            # The lock file itself cannot say who holds it: each waiter truncates it on open.
            owner.write_text(json.dumps(_owner_facts()), encoding="utf-8")
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def relative(self, path: Path) -> Path:
        try:
            return path.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise GitError(f"{path} is outside the repository {self.root}") from None

    def head(self) -> str | None:
        try:
            return self._repo.head.commit.hexsha
        except ValueError:
            return None  # a repository with no commit yet

    def branch(self) -> str | None:
        """The full name of the checked-out branch (refs/heads/…), None on a detached HEAD."""
        if self._repo.head.is_detached:
            return None
        return str(self._repo.head.reference.path)

    def ref(self, name: str) -> str | None:
        """The commit a ref points at, or None when there is no such ref."""
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}") or None
        except GitError:
            return None

    def branch_ref(self, name: str) -> str:
        """``refs/heads/NAME`` for a valid branch name; GitError otherwise."""
        try:
            short = self._git("check-ref-format", "--branch", name)
        except GitError:
            raise GitError(f"{name!r} is not a valid branch name") from None
        return f"refs/heads/{short}"

    def add_worktree(self, path: Path, commit: str, unwritten: Sequence[Path] = ()) -> None:
        """A detached work tree of ``commit`` at ``path``, for commits that must not touch
        the user's own work tree. Checkout hooks are not run for it (it is not the user's).
        The files ``unwritten`` (relative paths) are in its index but not written out: their
        new text is written next (a state file can be tens of megabytes)."""
        self._git(
            "-c", "core.hooksPath=" + os.devnull, "worktree", "add", "--quiet", "--detach",
            "--no-checkout", str(path), commit,
        )  # fmt: skip
        self._git("read-tree", commit, cwd=path)
        skipped = {p.as_posix() for p in unwritten}
        files = [f for f in self._git("ls-files", "-z", cwd=path).split("\0") if f]
        wanted = [f for f in files if f not in skipped]
        if wanted:
            self._git("checkout-index", "--", *wanted, cwd=path)

    def remove_worktree(self, path: Path) -> None:
        """Remove a work tree made by :meth:`add_worktree`, whatever state it was left in."""
        with contextlib.suppress(GitError):
            self._git("worktree", "remove", "--force", "--force", str(path))
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        self._git("worktree", "prune")

    def commit_in(self, worktree: Path, relative: Path, message: str) -> str:
        """Commit exactly ``relative`` (already written) in ``worktree`` with ``git commit``,
        so hooks and signing apply; returns the new commit. The worktree is the run's own,
        checked out for it: what is staged is ``relative`` alone, and committing the index
        as it is spares hashing a big state file a second time (as ``--only`` would)."""
        message_file = worktree.parent / f"{worktree.name}.message"
        message_file.write_text(message, encoding="utf-8")
        try:
            self._git("add", "--", str(relative), cwd=worktree)
            self._git("commit", "--quiet", "--no-edit", "-F", str(message_file), cwd=worktree)
        finally:
            message_file.unlink(missing_ok=True)
        return self._git("rev-parse", "HEAD", cwd=worktree)

    def update_ref(self, ref: str, new: str, expected: str | None) -> None:
        """Point ``ref`` at ``new`` only if it still points at ``expected`` (None: only if it
        does not exist): a compare-and-swap, so a ref moved meanwhile is never overwritten."""
        old = expected or "0" * len(new)
        try:
            self._git("update-ref", "-m", "reconciler: publish the run's commits", ref, new, old)
        except GitError as exc:
            now = self.ref(ref)
            if now == expected:
                raise  # not a moved ref: some other failure, reported as git gave it
            where = f"now at {now[:10]}" if now else "now absent"
            was = f"{expected[:10]}" if expected else "absent"
            raise GitError(
                f"{ref} moved while reconciler was applying ({where}, it was {was} when the "
                "run started); nothing was applied",
                "run again: the plan is made afresh from the new commit",
            ) from exc

    def stage(self, paths: Sequence[Path]) -> None:
        """Put the work tree's ``paths`` (relative) in the index as they are."""
        self._git("update-index", "--add", "--", *(str(p) for p in paths))

    def staged_as(self, rev: str, paths: Sequence[Path]) -> bool:
        """Whether the index holds ``paths`` exactly as ``rev`` has them."""
        try:
            self._git("diff-index", "--cached", "--quiet", rev, "--", *(str(p) for p in paths))
        except GitError:
            return False
        return True

    def checkout_paths(self, rev: str, paths: Sequence[Path]) -> None:
        """Make the work tree and the index hold ``paths`` as ``rev`` has them."""
        self._git("checkout", rev, "--", *(str(p) for p in paths))

    def blob(self, rev: str, relative: Path) -> str | None:
        """The blob id of ``relative`` at ``rev``, None when it has no such file."""
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"{rev}:{relative.as_posix()}")
        except GitError:
            return None

    def hash_file(self, relative: Path) -> str | None:
        """The blob id the work tree's ``relative`` would have, None when it does not exist."""
        if not (self.root / relative).exists():
            return None
        return self._git("hash-object", "--", str(relative))

    def read_at(self, rev: str, path: Path) -> str | None:
        """The text of ``path`` at ``rev``, or None when it did not exist there."""
        import git

        try:
            blob = self._repo.commit(rev).tree / self.relative(path).as_posix()
        except (KeyError, ValueError, git.BadName):
            return None
        data: bytes = blob.data_stream.read()
        return data.decode("utf-8")

    def grep_at(self, revs: Sequence[str], path: Path, text: str) -> dict[str, list[str]]:
        """The lines of ``path`` containing ``text`` (a fixed string), for each of ``revs``
        (full commit ids) that has any. Git searches every version itself: nothing but the
        matching lines leaves it, however large the file."""
        relative = self.relative(path).as_posix()
        found: dict[str, list[str]] = {}
        # Settings a user may have that would change the output's "REV:PATH:LINE" shape.
        settings = ["-c", "grep.lineNumber=false", "-c", "grep.column=false"]
        for start in range(0, len(revs), _REVS_PER_GREP):
            batch = revs[start : start + _REVS_PER_GREP]
            command = ["git", *settings, "grep", "--no-color", "-a", "-F", "-e", text, *batch]
            status, output, error = self._repo.git.execute(
                [*command, "--", relative], with_extended_output=True, with_exceptions=False
            )
            if status not in (0, 1):  # 1: nothing matched
                raise GitError(f"git grep failed: {str(error).strip() or status}")
            for line in str(output).splitlines():
                rev, _, rest = line.partition(":")
                found.setdefault(rev, []).append(rest[len(relative) + 1 :])
        return found

    def resolve(self, rev: str) -> str:
        """The full commit id of ``rev``; GitError when it names no commit."""
        import git

        try:
            return self._repo.commit(rev).hexsha
        except (git.BadName, ValueError):
            raise GitError(f"{rev!r} is not a commit in {self.root}") from None

    def log(
        self,
        path: Path,
        *,
        limit: int | None = None,
        rev: str | None = None,
        before: int | None = None,
    ) -> list[Commit]:
        """Commits that changed ``path``, newest first, with their trailers: those reachable
        from ``rev`` (default HEAD), committed at or before ``before`` (a Unix time) if given."""
        if self.head() is None:
            return []
        args = ["log", f"--format=%H{_UNIT}%aI{_UNIT}%cI{_UNIT}%B{_RECORD}"]
        if limit is not None:
            args.append(f"-n{limit}")
        if before is not None:
            args.append(f"--before=@{before}")  # git's raw "@seconds" form: no date guessing
        if rev is not None:
            args.append(self.resolve(rev))
        output = self._git(*args, "--", str(self.relative(path)))
        return [_parse_commit(record) for record in output.split(_RECORD) if record.strip()]


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_VARIABLE)
    if raw is None:
        return LOCK_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise GitError(f"{LOCK_TIMEOUT_VARIABLE}={raw!r} is not a number of seconds")
    return seconds


def _owner_facts() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["reconciler", *sys.argv[1:]]),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _describe_owner(owner: Path) -> str:
    """`` (pid 123 on host, `reconciler apply`, since …)`` from the owner file, when readable."""
    try:
        facts = json.loads(owner.read_text(encoding="utf-8"))
        return (
            f" (pid {int(facts['pid'])} on {facts['host']}, `{facts['command']}`, "
            f"since {facts['since']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # written a moment later, or by a run that was killed


def _parse_commit(record: str) -> Commit:
    sha, date, committed, body = record.strip("\n").split(_UNIT, 3)
    lines = body.strip().splitlines()
    trailers = {}
    for line in reversed(lines):
        key, sep, value = line.partition(": ")
        if not sep or not key.startswith("Reconciler-"):
            break
        trailers[key] = value
    return Commit(sha, date, lines[0] if lines else "", trailers, committed)
