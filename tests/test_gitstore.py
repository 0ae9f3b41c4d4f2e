"""The Git directory is found without opening the repository (for `plan`'s warnings)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from gitrepo import commit_all, init_repo

from reconciler.gitstore import find_git_dir

pytestmark = pytest.mark.git


def test_the_git_directory_of_a_repository_and_of_its_subdirectories(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "state" / "deep").mkdir(parents=True)
    assert find_git_dir(repo) == (repo / ".git").resolve()
    assert find_git_dir(repo / "state" / "deep") == (repo / ".git").resolve()


def test_a_linked_work_tree_has_its_own_git_directory(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "README").write_text("x\n", encoding="utf-8")
    commit_all(repo, "first")
    linked = tmp_path / "linked"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "-q", str(linked)],
        check=True,
        capture_output=True,
    )
    found = find_git_dir(linked)
    assert found is not None and found.parent == (repo / ".git" / "worktrees").resolve()
    assert (found / "HEAD").is_file()


def test_outside_a_repository_there_is_none(tmp_path: Path) -> None:
    assert find_git_dir(tmp_path) is None
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / ".git").write_text("not a gitdir line\n", encoding="utf-8")
    assert find_git_dir(tmp_path / "odd") is None
