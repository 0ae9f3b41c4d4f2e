"""Real GitOps repositories in temp directories, an LDIF builder, and a CLI runner.

``make_repo`` lays out what a deployment of reconciler looks like (DESIGN.md §2): an inventory
(defaults.yaml, <domain>.yaml, an LDIF export under inventories/data/) committed on ``main`` in a
fresh repository with its own identity, so tests run on a machine with no global Git config
(``isolate_git`` makes sure of that by hiding the global and system configs).
``change_directory`` rewrites and commits the export between runs: that is how a test changes
"the directory" (apply refuses uncommitted edits under inventories/).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from reconciler.cli import app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_INVENTORY = PROJECT_ROOT / "inventories"

DOMAIN = "example.com"
BASE_DN = "DC=example,DC=com"
USERS_OU = f"OU=Staff,{BASE_DN}"
GUID_NAMESPACE = uuid.UUID("7f0c2a4e-1d43-4b8a-9a49-52c7a3e5a0b1")

DEFAULTS_YAML = """\
# Defaults every domain spec is deep-merged over.
directory:
  flavor: active_directory
"""

SPEC_YAML = """\
domain: {domain}
directory:
  ldif: data/{domain}.ldif
  base_dn: {base_dn}
"""


@dataclass(frozen=True)
class User:
    """One AD-like user entry: ``uid@domain`` is its mail unless ``mail`` says otherwise."""

    uid: str
    name: str | None = None
    aliases: tuple[str, ...] = ()
    mail: str | None = None
    guid: str | None = None

    def address(self, domain: str = DOMAIN) -> str:
        return self.mail or f"{self.uid}@{domain}"

    def dn(self) -> str:
        return f"CN={self.uid},{USERS_OU}"

    def object_guid(self) -> uuid.UUID:
        """Stable per uid, so renames and edits are updates of the same identity."""
        return uuid.UUID(self.guid) if self.guid else uuid.uuid5(GUID_NAMESPACE, self.uid)


def users(count: int, prefix: str = "user") -> list[User]:
    """``count`` users ``user01`` … each with a display name and one ``<uid>.alias`` alias."""
    return [
        User(f"{prefix}{n:02d}", name=f"User {n:02d}", aliases=(f"{prefix}{n:02d}.alias",))
        for n in range(1, count + 1)
    ]


def ldif_text(entries: Iterable[User], domain: str = DOMAIN) -> str:
    """An ldifde-style export: the domain root, the users OU, then one ``user`` per entry."""
    blocks = [
        "version: 1",
        f"dn: {BASE_DN}\nobjectClass: top\nobjectClass: domain\ndc: example",
        f"dn: {USERS_OU}\nobjectClass: top\nobjectClass: organizationalUnit\nou: Staff",
    ]
    for user in entries:
        primary = user.address(domain)
        lines = [
            f"dn: {user.dn()}",
            "objectClass: top",
            "objectClass: person",
            "objectClass: organizationalPerson",
            "objectClass: user",
            f"objectCategory: CN=Person,CN=Schema,CN=Configuration,{BASE_DN}",
            f"cn: {user.uid}",
            f"uid: {user.uid}",
            f"sAMAccountName: {user.uid}",
            f"mail: {primary}",
            f"proxyAddresses: SMTP:{primary}",
        ]
        lines += [
            f"proxyAddresses: smtp:{a if '@' in a else f'{a}@{domain}'}" for a in user.aliases
        ]
        if user.name is not None:
            encoded = base64.b64encode(user.name.encode("utf-8")).decode("ascii")
            lines.append(f"displayName:: {encoded}")
        guid = base64.b64encode(user.object_guid().bytes_le).decode("ascii")
        lines.append(f"objectGUID:: {guid}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def ldif_path(repo: Path, domain: str = DOMAIN) -> Path:
    return repo / "inventories" / "data" / f"{domain}.ldif"


def spec_path(repo: Path, domain: str = DOMAIN) -> Path:
    return repo / "inventories" / f"{domain}.yaml"


def state_path(repo: Path, domain: str = DOMAIN) -> Path:
    return repo / "state" / f"{domain}.yaml"


def write_ldif(repo: Path, entries: Iterable[User], domain: str = DOMAIN) -> Path:
    """Replace the domain's LDIF export, without committing it."""
    path = ldif_path(repo, domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ldif_text(entries, domain), encoding="utf-8")
    return path


def change_directory(
    repo: Path, entries: Iterable[User], domain: str = DOMAIN, message: str = "New export"
) -> str:
    """Replace the domain's LDIF export and commit it; returns the new commit."""
    write_ldif(repo, entries, domain)
    return commit_all(repo, message)


def git(repo: Path, *args: str) -> str:
    """Run real git in ``repo``; its stdout without the final newline. Fails the test when git
    exits non-zero."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout.rstrip("\n")


def init_repo(path: Path) -> Path:
    """An empty repository on ``main`` with a local identity, no signing and its own hooks dir."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "-b", "main")
    for key, value in (
        ("user.name", "Reconciler Tests"),
        ("user.email", "tests@reconciler.invalid"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
        ("core.hooksPath", str(path / ".git" / "hooks")),
        ("core.autocrlf", "false"),
    ):
        git(path, "config", "--local", key, value)
    return path


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)
    return head(repo)


def make_repo(
    root: Path,
    entries: Sequence[User] | None = None,
    *,
    domain: str = DOMAIN,
    spec: str | None = None,
    inventory: Path | None = None,
) -> Path:
    """A committed GitOps repository at ``root / "gitops"``; returns its path.

    Either a copy of an existing ``inventory`` directory (e.g. :data:`DEMO_INVENTORY`), or a
    generated one: defaults.yaml, the ``domain`` spec (``spec`` replaces its text) and an LDIF
    export of ``entries`` (default: :func:`users` (3)).
    """
    repo = init_repo(root / "gitops")
    if inventory is not None:
        shutil.copytree(inventory, repo / "inventories")
    else:
        (repo / "inventories").mkdir()
        (repo / "inventories" / "defaults.yaml").write_text(DEFAULTS_YAML, encoding="utf-8")
        spec_text = spec if spec is not None else SPEC_YAML.format(domain=domain, base_dn=BASE_DN)
        spec_path(repo, domain).write_text(spec_text, encoding="utf-8")
        write_ldif(repo, users(3) if entries is None else entries, domain)
    (repo / "README.md").write_text("A GitOps repository for reconciler tests.\n", "utf-8")
    commit_all(repo, "Inventory")
    return repo


def add_domain(repo: Path, domain: str, entries: Sequence[User]) -> str:
    """Add a second domain (spec and LDIF export) to the inventory and commit it."""
    spec_path(repo, domain).write_text(
        SPEC_YAML.format(domain=domain, base_dn=BASE_DN), encoding="utf-8"
    )
    write_ldif(repo, entries, domain)
    return commit_all(repo, f"Add {domain}")


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def status(repo: Path) -> str:
    """``git status --porcelain`` including untracked files: empty when the tree is clean."""
    return git(repo, "status", "--porcelain", "--untracked-files=all")


def commit_message(repo: Path, rev: str = "HEAD") -> str:
    return git(repo, "log", "-1", "--format=%B", rev)


def is_ancestor(repo: Path, ancestor: str, rev: str = "HEAD") -> bool:
    done = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", ancestor, rev], check=False
    )
    return done.returncode == 0


def add_hook(repo: Path, name: str, script: str) -> Path:
    """Install an executable hook, e.g. ``add_hook(repo, "pre-commit", "exit 1")``."""
    hook = repo / ".git" / "hooks" / name
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    hook.chmod(0o755)
    return hook


# Variables that would point git (ours and reconciler's) at another repository, index or config:
# set when the suite runs from inside a Git hook, for instance.
_GIT_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CEILING_DIRECTORIES",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
)
_RECONCILER_ENV = ("RECONCILER_INVENTORY", "RECONCILER_STATE_DIR", "RECONCILER_REPO")


def isolate_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run git as on a bare CI machine: no global or system config, no inherited repository,
    and no RECONCILER_* variables from the developer's shell."""
    for name in (*_GIT_ENV, *_RECONCILER_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")


def invoke(*args: str) -> Result:
    """Run ``reconciler ARGS`` in-process; ``result.stdout`` and ``result.stderr`` are separate."""
    return CliRunner().invoke(app, list(args))
