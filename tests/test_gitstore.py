"""The Git directory is found without opening the repository (for `plan`'s warnings)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from gitrepo import commit_all, git, init_repo, isolate_git

from reconciler.gitstore import GitStore, find_git_dir

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


def _layouts(tmp_path: Path) -> dict[str, Path]:
    """Work trees of every shape plan may be run in, each with a commit."""
    repo = init_repo(tmp_path / "repo")
    (repo / "state").mkdir()
    (repo / "state" / "README").write_text("x\n", encoding="utf-8")
    commit_all(repo, "first")
    library = init_repo(tmp_path / "library")
    (library / "README").write_text("y\n", encoding="utf-8")
    commit_all(library, "library")
    # A submodule's .git is a file with a relative "gitdir: ../.git/modules/library".
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "lib")
    commit_all(repo, "submodule")
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"))
    (tmp_path / "linked" / "state" / "deep").mkdir(parents=True)
    return {
        "repository": repo,
        "subdirectory": repo / "state",
        "submodule": repo / "lib",
        "linked work tree": tmp_path / "linked" / "state" / "deep",
    }


def test_the_git_directory_found_is_the_one_the_store_keeps_its_journal_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_git(monkeypatch)
    layouts = _layouts(tmp_path)
    assert (layouts["submodule"] / ".git").read_text(encoding="utf-8").startswith("gitdir: ../")
    # GIT_DIR does not move the store (it opens the repository around --repo), nor the finder.
    for git_dir in (None, str(tmp_path / "library" / ".git")):
        if git_dir is not None:
            monkeypatch.setenv("GIT_DIR", git_dir)
        for name, path in layouts.items():
            with GitStore.discover(path) as store:
                assert find_git_dir(path) == store.git_dir.resolve(), (name, git_dir)
