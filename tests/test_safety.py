"""Guards, overrides, saved plans, Markdown plans and `apply --branch` through the CLI, on real
Git repositories. Every refused run is checked to have changed nothing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
from gitrepo import (
    BASE_DN,
    DOMAIN,
    PROJECT_ROOT,
    SPEC_YAML,
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
    isolate_git,
    ldif_path,
    make_repo,
    spec_path,
    status,
    users,
)
from test_workflow import Untouched, recipients, state_text, trailer

pytestmark = pytest.mark.git

LIMITED_SPEC = SPEC_YAML.format(domain=DOMAIN, base_dn=BASE_DN) + (
    "policy:\n  limits:\n    max_deletes: 4\n    delete_percent: null\n"
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """10 users (20 addresses) synced, under max_deletes 4; the current directory."""
    repo = make_repo(tmp_path, users(10), spec=LIMITED_SPEC)
    monkeypatch.chdir(repo)
    assert invoke("apply").exit_code == 0
    return repo


def leave(repo: Path, people: int) -> None:
    """The first ``people`` users leave the directory: 2 removals each."""
    change_directory(repo, users(10)[people:])


def plan_digest(repo: Path) -> str:
    (domain,) = json.loads(invoke("plan", "--format", "json").stdout)["domains"]
    digest: str = domain["digest"]
    return digest


# --- limits and overrides -------------------------------------------------------------------


@pytest.mark.parametrize(("people", "refused"), [(1, False), (2, False), (3, True)])
def test_max_deletes_at_the_boundary(limited: Path, people: int, refused: bool) -> None:
    leave(limited, people)  # 2, 4, 6 removals against max_deletes 4
    plan = invoke("plan")
    assert plan.exit_code == (4 if refused else 0)
    before = Untouched(limited)
    applied = invoke("apply")
    if refused:
        digest = plan_digest(limited)
        reason = (
            f"{DOMAIN}: 6 removals, over policy.limits.max_deletes 4; if that is intended: "
            f"`reconciler apply {DOMAIN} --allow-deletes 6` or `--approve {digest}`"
        )
        assert f"  REFUSED: {reason}" in plan.stdout.splitlines()
        assert applied.exit_code == 4
        assert applied.stderr.splitlines() == [
            "Error: apply refused, nothing was applied:",
            f"  {reason}",
        ]
        before.check()
    else:
        assert applied.exit_code == 0, applied.output
        assert commit_count(limited) == before.count + 1


@pytest.mark.parametrize(("allowed", "passes"), [(5, False), (6, True), (7, False)])
def test_allow_deletes_names_the_exact_number(limited: Path, allowed: int, passes: bool) -> None:
    leave(limited, 3)  # 6 removals
    before = Untouched(limited)
    result = invoke("apply", "--allow-deletes", str(allowed))
    if passes:
        assert result.exit_code == 0, result.output
        assert commit_count(limited) == before.count + 1
        assert trailer(limited, "Reconciler-Counts") == "add=0 update=0 remove=6"
        assert len(recipients(state_text(limited))) == 14
    else:
        assert result.exit_code == 4
        assert f"--allow-deletes {allowed} matches no plan of this run" in result.stderr
        assert "removals now: example.com 6" in result.stderr
        before.check()


def test_approve_names_the_exact_plan(limited: Path) -> None:
    leave(limited, 3)
    digest = plan_digest(limited)
    # The directory changed since the review: one leaver fewer, so another plan.
    change_directory(limited, users(10)[2:], message="One came back")
    other = plan_digest(limited)
    assert other != digest
    before = Untouched(limited)
    refused = invoke("apply", "--approve", digest)
    assert refused.exit_code == 4
    assert f"--approve {digest} names no plan of this run" in refused.stderr
    assert f"plan digests now: {DOMAIN} {other}" in refused.stderr
    before.check()

    change_directory(limited, users(10)[3:], message="And left again")
    applied = invoke("apply", "--approve", digest)
    assert applied.exit_code == 0, applied.output
    assert trailer(limited, "Reconciler-Plan-Digest") == digest


def test_an_empty_read_is_refused_even_with_overrides(limited: Path) -> None:
    change_directory(limited, [])
    digest = plan_digest(limited)
    before = Untouched(limited)
    result = invoke("apply", "--allow-deletes", "20", "--approve", digest)
    assert result.exit_code == 4
    assert "the directory gave no recipients while the state has 20" in result.stderr
    before.check()


def test_policy_deactivate_and_protected_through_apply(tmp_path: Path) -> None:
    spec = SPEC_YAML.format(domain=DOMAIN, base_dn=BASE_DN) + (
        f"protected: [user01@{DOMAIN}]\npolicy:\n  removal: deactivate\n"
    )
    repo = make_repo(tmp_path, users(3), spec=spec)
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    change_directory(repo, users(3)[2:])  # user01 and user02 leave

    plan = invoke("plan", "--repo", str(repo))
    assert plan.exit_code == 0, plan.output
    # user01's alias goes (only the listed address is protected), user01 stays.
    assert plan.stdout.splitlines()[1:] == [
        f"  ! user01.alias@{DOMAIN}  alias → user01@{DOMAIN} → disabled",
        f"  ! user02.alias@{DOMAIN}  alias → user02@{DOMAIN} → disabled",
        f'  ! user02@{DOMAIN}  mailbox "User 02" → disabled',
        f'  - user01@{DOMAIN}  mailbox "User 01"  (skipped: protected)',
        f"{DOMAIN}: 0 to add, 0 to update, 3 to deactivate, 0 to remove (6 → 6 recipients)",
        "Plan: 0 to add, 0 to update, 3 to deactivate, 0 to remove in 1 of 1 domain.",
    ]

    applied = invoke("apply", "--repo", str(repo))
    assert applied.exit_code == 0, applied.output
    text = state_text(repo)
    assert f'  user01@{DOMAIN}: {{"kind": "mailbox", "name": "User 01", "id": "' in text
    user02 = next(line for line in text.splitlines() if line.startswith(f"  user02@{DOMAIN}: "))
    assert '"name": "User 02", "id": "' in user02 and '"status": "disabled"' in user02
    assert (
        f'  user02.alias@{DOMAIN}: {{"kind": "alias", "status": "disabled", '
        f'"target": "user02@{DOMAIN}"}}' in text.splitlines()
    )
    assert trailer(repo, "Reconciler-Counts") == "add=0 update=0 deactivate=3 remove=0"
    # Converged: the disabled ones stay as they are; user01 stays protected (skipped).
    again = invoke("plan", "--repo", str(repo), "--detailed-exitcode")
    assert again.exit_code == 0, again.output


# --- saved plans ----------------------------------------------------------------------------


@pytest.fixture
def saved(limited: Path) -> Path:
    """A plan of 2 removals saved to plan.json, beside the repository."""
    leave(limited, 1)
    path = limited.parent / "plan.json"
    result = invoke("plan", "--out", str(path), "-q")
    assert result.exit_code == 0, result.output
    return path


def test_a_saved_plan_is_valid_json_with_what_it_was_made_from(saved: Path) -> None:
    document = json.loads(saved.read_text("utf-8"))
    schema = json.loads((PROJECT_ROOT / "schemas" / "plan.schema.json").read_text("utf-8"))
    jsonschema.Draft7Validator(schema).validate(document)
    assert document["base_commit"] == head(saved.parent / "gitops")
    (domain,) = document["domains"]
    assert set(domain["fingerprints"]) == {"spec", "state", "directory"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in domain["fingerprints"].values())
    assert domain["counts"] == {"add": 0, "update": 0, "remove": 2}


def test_a_fresh_saved_plan_applies_after_unrelated_commits(saved: Path) -> None:
    repo = saved.parent / "gitops"
    (repo / "README.md").write_text("merged the pull request\n", "utf-8")
    commit_all(repo, "Unrelated")
    digest = json.loads(saved.read_text("utf-8"))["domains"][0]["digest"]
    result = invoke("apply", "--plan", str(saved))
    assert result.exit_code == 0, result.output
    assert trailer(repo, "Reconciler-Plan-Digest") == digest
    assert status(repo) == ""


def _stale(repo: Path, saved: Path, reason: str) -> None:
    before = Untouched(repo)
    result = invoke("apply", "--plan", str(saved))
    assert result.exit_code == 4, result.output
    lines = result.stderr.splitlines()
    assert re.fullmatch(
        rf"Error: stale plan {re.escape(str(saved))} \(saved at [0-9a-f]{{10}}, HEAD is "
        r"[0-9a-f]{10}\), nothing was applied:",
        lines[0],
    )
    assert lines[1:] == [
        f"  {DOMAIN}: {reason}",
        "  make a new plan with `reconciler plan --out FILE`, review it, and apply that",
    ]
    assert head(repo) == before.head


def test_a_saved_plan_is_stale_when_the_state_moved(saved: Path) -> None:
    repo = saved.parent / "gitops"
    assert invoke("apply").exit_code == 0  # the same changes, applied another way
    _stale(repo, saved, "the state file changed since the plan was made")


def test_a_saved_plan_is_stale_when_the_spec_changed(saved: Path) -> None:
    repo = saved.parent / "gitops"
    spec = spec_path(repo)
    spec.write_text(spec.read_text("utf-8") + 'exclude: ["nobody@*"]\n', "utf-8")
    commit_all(repo, "Spec edit")
    _stale(repo, saved, "the spec changed since the plan was made")


def test_a_saved_plan_is_stale_when_the_directory_changed(saved: Path) -> None:
    repo = saved.parent / "gitops"
    change_directory(repo, users(10)[2:])  # one more leaver
    _stale(repo, saved, "the directory changed since the plan was made")


def test_attributes_the_mapping_does_not_use_do_not_make_a_plan_stale(saved: Path) -> None:
    repo = saved.parent / "gitops"
    export = ldif_path(repo)
    export.write_text(export.read_text("utf-8").replace("cn: user05\n", "cn: user05\n"
                      "description: logged on today\n"), "utf-8")  # fmt: skip
    commit_all(repo, "Export with a new lastLogon")
    assert invoke("apply", "--plan", str(saved)).exit_code == 0


def test_an_edited_saved_plan_is_rejected(saved: Path) -> None:
    repo = saved.parent / "gitops"
    text = saved.read_text("utf-8").replace('"action": "remove"', '"action": "add"', 1)
    saved.write_text(text, "utf-8")
    before = Untouched(repo)
    result = invoke("apply", "--plan", str(saved))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"Error: {saved}: the changes of {DOMAIN} do not match the plan's digest "
        f"{json.loads(text)['domains'][0]['digest']}; the file was edited after it was saved"
    )
    before.check()


def test_a_printed_json_plan_is_not_a_saved_plan(limited: Path) -> None:
    leave(limited, 1)
    printed = limited / "printed.json"
    printed.write_text(invoke("plan", "--format", "json").stdout, "utf-8")
    result = invoke("apply", "--plan", str(printed))
    assert result.exit_code == 1
    assert "not one saved with `plan --out`" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not a JSON plan"),
        ('{"format_version": 99}', "is a plan of format_version 99"),
        ('{"format_version": 1, "domains": 3}', "is not a valid plan"),
    ],
)
def test_a_broken_plan_file(limited: Path, content: str, message: str) -> None:
    path = limited / "broken.json"
    path.write_text(content, "utf-8")
    result = invoke("apply", "--plan", str(path))
    assert result.exit_code == 1
    assert message in result.stderr


def test_a_saved_plan_names_its_domains(saved: Path) -> None:
    result = invoke("apply", DOMAIN, "--plan", str(saved))
    assert result.exit_code == 2
    assert "a saved plan names its domains" in result.stderr


def test_a_missing_plan_file(limited: Path) -> None:
    result = invoke("apply", "--plan", "nowhere.json")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot read the plan nowhere.json")


def test_a_saved_plan_still_obeys_the_guards(limited: Path) -> None:
    leave(limited, 3)
    assert invoke("plan", "--out", "plan.json").exit_code == 4  # saved, and says it is refused
    refused = invoke("apply", "--plan", "plan.json")
    assert refused.exit_code == 4
    assert "over policy.limits.max_deletes 4" in refused.stderr
    passed = invoke("apply", "--plan", "plan.json", "--allow-deletes", "6")
    assert passed.exit_code == 0, passed.output


# --- Markdown -------------------------------------------------------------------------------


def test_plan_markdown_and_the_github_step_summary(
    limited: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = limited.parent / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    leave(limited, 3)
    result = invoke("plan", "--format", "markdown")
    assert result.exit_code == 4
    text = result.stdout
    assert text.startswith("## Reconciler plan\n")
    assert "| example.com | 0 | 0 | 0 | 6 | 0 | 20 → 14 | ⛔ refused |" in text
    assert "> ⛔ **Refused:** example.com: 6 removals, over policy.limits.max\\_deletes 4" in text
    assert "<details><summary>6 to remove</summary>" in text
    assert '- user01@example.com  mailbox "User 01"' in text
    assert summary.read_text("utf-8") == text + "\n"
    # Every plan run appends, whatever its format.
    assert invoke("plan", "-q").exit_code == 4
    assert summary.read_text("utf-8") == (text + "\n") * 2


# --- apply --branch -------------------------------------------------------------------------


def test_apply_on_a_new_branch_leaves_the_current_one_alone(limited: Path) -> None:
    leave(limited, 1)
    before = Untouched(limited)
    result = invoke("apply", "--branch", "sync/today")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith(" on branch sync/today")
    before.check()  # main, the work tree and the state file as they were

    branch_head = git(limited, "rev-parse", "sync/today")
    assert git(limited, "rev-parse", "sync/today^") == before.head
    assert trailer(limited, "Reconciler-Counts", "sync/today") == "add=0 update=0 remove=2"
    assert trailer(limited, "Reconciler-Domain", "sync/today") == DOMAIN
    assert commit_message(limited, branch_head).splitlines()[0] == (
        f"{DOMAIN}: 0 to add, 0 to update, 2 to remove (20 → 18 recipients)"
    )
    assert git(limited, "worktree", "list", "--porcelain").count("worktree ") == 1

    again = invoke("apply", "--branch", "sync/today")
    assert again.exit_code == 1
    assert again.stderr.splitlines()[0] == "Error: branch sync/today already exists"
    assert invoke("apply", "--branch", "bad..name").exit_code == 1
    before.check()


def test_apply_on_a_branch_with_nothing_to_commit_makes_no_branch(limited: Path) -> None:
    result = invoke("apply", "--branch", "empty")
    assert result.exit_code == 0, result.output
    assert result.stderr == "nothing to commit: branch empty was not created\n"
    assert git(limited, "branch", "--list", "empty") == ""


def test_apply_on_a_branch_runs_the_hooks(limited: Path) -> None:
    seen = limited / ".git" / "seen"
    add_hook(limited, "commit-msg", f'head -1 "$1" > "{seen}"')
    leave(limited, 1)
    assert invoke("apply", "--branch", "review").exit_code == 0
    assert seen.read_text("utf-8").startswith(f"{DOMAIN}: 0 to add")


def test_apply_on_a_branch_from_a_detached_head(limited: Path) -> None:
    leave(limited, 1)
    git(limited, "checkout", "--quiet", "--detach")
    before = head(limited)
    assert invoke("apply").exit_code == 1  # the current branch cannot move: there is none
    result = invoke("apply", "--branch", "from-ci")
    assert result.exit_code == 0, result.output
    assert head(limited) == before
    assert git(limited, "rev-parse", "from-ci^") == before


# --- all or nothing across domains ----------------------------------------------------------


def test_a_failing_commit_of_the_second_domain_publishes_nothing(limited: Path) -> None:
    add_domain(limited, "example.org", users(2))
    leave(limited, 1)
    add_hook(
        limited,
        "pre-commit",
        'git diff --cached --name-only | grep -q example.org && { echo "no org" >&2; exit 1; }\n'
        "exit 0",
    )
    before = Untouched(limited)
    result = invoke("apply")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].startswith("Error: example.org: git commit failed")
    assert "nothing was applied: no domain's commit was published" in result.stderr
    before.check()
    assert not (limited / "state" / "example.org.yaml").exists()
    assert git(limited, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_protected_addresses_must_be_in_the_domain(tmp_path: Path) -> None:
    spec = SPEC_YAML.format(domain=DOMAIN, base_dn=BASE_DN) + "protected: [abuse@example.org]\n"
    repo = make_repo(tmp_path, users(1), spec=spec)
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"{spec_path(repo)}:5:13: protected address 'abuse@example.org' is not in "
        "example.com; a sync never touches it anyway (at protected/0)"
    )


def test_no_updates_and_no_deactivations_are_listed_as_skipped(tmp_path: Path) -> None:
    spec = SPEC_YAML.format(domain=DOMAIN, base_dn=BASE_DN) + (
        "policy:\n  allow_updates: false\n  allow_deactivations: false\n"
    )
    repo = make_repo(tmp_path, users(3), spec=spec)
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    renamed = User("user02", name="Renamed", aliases=("user02.alias",))
    change_directory(repo, [users(3)[0], renamed, User("user04", name="User 04")])
    plan = invoke("plan", "--repo", str(repo))
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.splitlines()[1:] == [
        f'  + user04@{DOMAIN}  mailbox "User 04"',
        f"  - user03.alias@{DOMAIN}  alias → user03@{DOMAIN}  "
        "(skipped: policy.allow_deactivations is false)",
        f'  - user03@{DOMAIN}  mailbox "User 03"  (skipped: policy.allow_deactivations is false)',
        f'  ~ user02@{DOMAIN}  name: "User 02" → "Renamed"  '
        "(skipped: policy.allow_updates is false)",
        f"{DOMAIN}: 1 to add, 0 to update, 0 to remove (6 → 7 recipients)",
        "Plan: 1 to add, 0 to update, 0 to remove in 1 of 1 domain.",
    ]
    document = json.loads(invoke("plan", "--repo", str(repo), "--format", "json").stdout)
    skipped = document["domains"][0]["skipped"]
    assert [(s["action"], s["address"], s["reason"]) for s in skipped][-1] == (
        "update",
        f"user02@{DOMAIN}",
        "policy.allow_updates is false",
    )
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    text = state_text(repo)
    assert '"User 02"' in text and "Renamed" not in text and f"user03@{DOMAIN}" in text


def test_an_unfinished_rebase_is_refused(limited: Path) -> None:
    readme = limited / "README.md"
    git(limited, "checkout", "--quiet", "-b", "topic")
    readme.write_text("topic\n", "utf-8")
    commit_all(limited, "Topic README")
    git(limited, "checkout", "--quiet", "main")
    readme.write_text("main\n", "utf-8")
    commit_all(limited, "Main README")
    git(limited, "checkout", "--quiet", "topic")
    rebase = subprocess.run(
        ["git", "-C", str(limited), "rebase", "main"], capture_output=True, check=False
    )
    assert rebase.returncode != 0, "the rebase should stop on a conflict"
    before = head(limited)
    for args in (["apply"], ["apply", "--branch", "x"], ["rollback", DOMAIN]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith(f"Error: {limited} is in the middle of a rebase"), args
    assert head(limited) == before
