"""The Git repository that holds the state: preflight checks, the run lock, commits, history.

GitPython lives here only. Commits are made by running ``git commit`` so that the user's hooks
and commit signing apply, exactly as for a commit made by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import git
from filelock import FileLock, Timeout

from reconciler.errors import GitError

LOCK_FILE = "reconciler.lock"
LOCK_TIMEOUT_SECONDS = 10.0
_UNFINISHED = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
}
_RECORD, _UNIT = "\x1e", "\x1f"


@dataclass(frozen=True)
class Commit:
    """A commit that touched a state file, with the trailers reconciler wrote into it."""

    sha: str
    date: str
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.sha[:10]


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

    def _git(self, *args: str) -> str:
        try:
            return str(self._repo.git.execute(["git", *args], with_extended_output=False))
        except git.GitCommandError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().replace("\n", " ")
            raise GitError(f"git {args[0]} failed: {detail or exc.status}") from None

    def preflight(self, watched: Sequence[Path]) -> None:
        """Refuse a detached HEAD, an unfinished merge or rebase, and uncommitted edits
        under ``watched`` (applying over a hand edit would lose or commit it)."""
        for marker, what in _UNFINISHED.items():
            if (self.git_dir / marker).exists():
                raise GitError(
                    f"{self.root} is in the middle of {what}", "finish or abort it, then run again"
                )
        if self._repo.head.is_detached:
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
        """One run at a time per repository."""
        lock = FileLock(str(self.git_dir / LOCK_FILE))
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_SECONDS)
        except Timeout:
            raise GitError(
                f"another reconciler run holds {self.git_dir / LOCK_FILE}",
                "wait for it to finish, then run again",
            ) from None
        try:
            yield
        finally:
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

    def commit_file(self, path: Path, message: str) -> str:
        """Commit exactly ``path`` (already written) with ``message``; returns the new commit.

        On failure (a hook refused, no identity configured…) the file is put back as it was
        in HEAD, so a failed apply leaves no trace.
        """
        relative = str(self.relative(path))
        message_file = self.git_dir / "RECONCILER_COMMIT_MSG"
        message_file.write_text(message, encoding="utf-8")
        try:
            self._git("add", "--", relative)
            self._git(
                "commit", "--quiet", "--no-edit", "-F", str(message_file), "--only", "--", relative
            )
        except GitError:
            self.restore(path)
            raise
        finally:
            message_file.unlink(missing_ok=True)
        head = self.head()
        assert head is not None
        return head

    def restore(self, path: Path) -> None:
        """Put ``path`` back as HEAD has it (or remove it when HEAD has none)."""
        relative = str(self.relative(path))
        with contextlib.suppress(GitError):
            self._git("reset", "--quiet", "--", relative)
        if self.read_at("HEAD", path) is None:
            path.unlink(missing_ok=True)
        else:
            self._git("checkout", "HEAD", "--", relative)

    def read_at(self, rev: str, path: Path) -> str | None:
        """The text of ``path`` at ``rev``, or None when it did not exist there."""
        try:
            blob = self._repo.commit(rev).tree / self.relative(path).as_posix()
        except (KeyError, ValueError, git.BadName):
            return None
        data: bytes = blob.data_stream.read()
        return data.decode("utf-8")

    def resolve(self, rev: str) -> str:
        """The full commit id of ``rev``; GitError when it names no commit."""
        try:
            return self._repo.commit(rev).hexsha
        except (git.BadName, ValueError):
            raise GitError(f"{rev!r} is not a commit in {self.root}") from None

    def log(self, path: Path, *, limit: int | None = None) -> list[Commit]:
        """Commits that changed ``path``, newest first, with their trailers."""
        if self.head() is None:
            return []
        args = ["log", f"--format=%H{_UNIT}%aI{_UNIT}%B{_RECORD}"]
        if limit is not None:
            args.append(f"-n{limit}")
        output = self._git(*args, "--", str(self.relative(path)))
        return [_parse_commit(record) for record in output.split(_RECORD) if record.strip()]


def _parse_commit(record: str) -> Commit:
    sha, date, body = record.strip("\n").split(_UNIT, 2)
    lines = body.strip().splitlines()
    trailers = {}
    for line in reversed(lines):
        key, sep, value = line.partition(": ")
        if not sep or not key.startswith("Reconciler-"):
            break
        trailers[key] = value
    return Commit(sha, date, lines[0] if lines else "", trailers)
