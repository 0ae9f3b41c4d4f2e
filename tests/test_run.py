"""`reconciler run`: due domains, each synced on its own under every guard (real Git repos,
LDIF exports, a real slapd), the summary table and the exit code of the worst outcome."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gitrepo import (
    BASE_DN,
    DOMAIN,
    SPEC_YAML,
    User,
    add_domain,
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
    state_path,
    status,
    users,
)
from slapd import READER_DN, SlapdServer, free_port

from reconciler.reconcile import Workspace
from reconciler.runner import run
from reconciler.schedule import ATTEMPTS_FILE, Shard, parse_shard

pytestmark = pytest.mark.git

OTHER = "other.org"
THIRD = "third.net"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two never-synced domains, example.com (3 users) and other.org (2); the current dir."""
    path = make_repo(tmp_path, users(3))
    add_domain(path, OTHER, users(2, prefix="o"))
    monkeypatch.chdir(path)
    return path


def workspace(repo: Path) -> Workspace:
    return Workspace(repo / "inventories", repo / "state", repo)


def set_schedule(repo: Path, domain: str, schedule: str) -> None:
    path = spec_path(repo, domain)
    path.write_text(path.read_text(encoding="utf-8") + f"schedule: {schedule}\n", "utf-8")
    commit_all(repo, f"Schedule {domain}")


def table(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by domain: [outcome, counts, commit or reason]."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        domain, rest = line.split("  ", 1)
        outcome, counts, *detail = [c.strip() for c in rest.strip().split("  ") if c.strip()]
        rows[domain] = [outcome, counts, " ".join(detail)]
    return rows


def state_text(repo: Path, domain: str) -> str:
    return state_path(repo, domain).read_text(encoding="utf-8")


# --- named domains run now ------------------------------------------------------------------------


def test_named_domains_run_now_one_commit_each(repo: Path) -> None:
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 0, result.stderr
    rows = table(result.stdout)
    assert result.stdout.splitlines()[0].split() == [
        "DOMAIN",
        "OUTCOME",
        "CHANGES",
        "COMMIT",
        "/",
        "REASON",
    ]
    assert rows[DOMAIN][:2] == ["applied", "add=6 update=0 remove=0"]
    assert rows[OTHER][:2] == ["applied", "add=4 update=0 remove=0"]
    log = git(repo, "log", "--format=%h %s", "-2").splitlines()
    assert [line.split(" ", 1)[1] for line in log] == [
        "other.org: 4 to add, 0 to update, 0 to remove (0 → 4 recipients)",
        "example.com: 6 to add, 0 to update, 0 to remove (0 → 6 recipients)",
    ]
    assert rows[OTHER][2] == git(repo, "rev-parse", "--short=10", "HEAD")
    message = commit_message(repo)
    assert "Reconciler-Action: apply" in message
    assert "Reconciler-Via: run" in message
    assert status(repo) == ""
    # A second run finds nothing to change and commits nothing.
    before = head(repo)
    again = invoke("run", DOMAIN, OTHER)
    assert again.exit_code == 0
    assert table(again.stdout)[DOMAIN][:2] == ["in sync", "add=0 update=0 remove=0"]
    assert head(repo) == before


def test_the_run_commits_are_history_and_rollback_material(repo: Path) -> None:
    assert invoke("run", DOMAIN).exit_code == 0
    history = invoke("history", DOMAIN)
    assert "apply" in history.stdout
    rolled = invoke("rollback", DOMAIN)
    assert rolled.exit_code == 0, rolled.stderr


def test_a_domain_without_a_schedule_runs_only_when_named(repo: Path) -> None:
    result = invoke("run")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "2 without a schedule" in result.stderr
    assert not state_path(repo, DOMAIN).exists()


def test_an_unknown_named_domain_is_an_error(repo: Path) -> None:
    result = invoke("run", "nowhere.example")
    assert result.exit_code == 1
    assert "no spec for nowhere.example" in result.stderr


# --- schedules ------------------------------------------------------------------------------------


def test_schedule_due_and_not_due_with_an_injected_clock(repo: Path) -> None:
    set_schedule(repo, DOMAIN, "{every: 6h}")
    set_schedule(repo, OTHER, "{times_per_day: 2}")  # every 12 hours
    now = datetime.now(UTC)
    first = run(workspace(repo), now=now)
    assert [(d.domain, d.outcome) for d in first.domains] == [
        (DOMAIN, "applied"),
        (OTHER, "applied"),
    ]

    # An hour later nothing is due: the apply commits are an hour old.
    later = run(workspace(repo), now=now + timedelta(hours=1))
    assert later.domains == []
    assert [d for d, _ in later.not_due] == [DOMAIN, OTHER]
    assert dict(later.not_due)[DOMAIN] == pytest.approx(
        now + timedelta(hours=6), abs=timedelta(minutes=1)
    )

    # Seven hours later example.com is due (6h) and other.org is not (12h).
    seven = run(workspace(repo), now=now + timedelta(hours=7))
    assert [(d.domain, d.outcome) for d in seven.domains] == [(DOMAIN, "in sync")]
    assert [d for d, _ in seven.not_due] == [OTHER]

    # In sync made no commit, yet the attempt counts: at +8h example.com is not due again.
    eight = run(workspace(repo), now=now + timedelta(hours=8))
    assert eight.domains == []
    record = json.loads((repo / ".git" / ATTEMPTS_FILE).read_text(encoding="utf-8"))
    assert record[DOMAIN]["outcome"] == "in sync"
    assert status(repo) == "", "the attempts record must not dirty the work tree"

    thirteen = run(workspace(repo), now=now + timedelta(hours=13, minutes=1))
    assert [d.domain for d in thirteen.domains] == [DOMAIN, OTHER]


def test_the_schedule_falls_back_on_the_commits_in_a_fresh_clone(
    repo: Path, tmp_path: Path
) -> None:
    set_schedule(repo, DOMAIN, "{every: 1d}")
    assert invoke("run").exit_code == 0
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(repo), str(clone))
    assert not (clone / ".git" / ATTEMPTS_FILE).exists()
    result = run(workspace(clone), now=datetime.now(UTC) + timedelta(hours=2))
    assert result.domains == []
    assert [d for d, _ in result.not_due] == [DOMAIN]


def test_an_unreadable_attempts_record_is_ignored(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_schedule(repo, DOMAIN, "{every: 30m}")
    (repo / ".git" / ATTEMPTS_FILE).write_text("{not json", encoding="utf-8")
    result = run(workspace(repo))
    assert [d.outcome for d in result.domains] == ["applied"]
    assert "ignoring" in caplog.text


# --- one domain's trouble never stops the others --------------------------------------------------


def test_a_refused_domain_and_a_fine_one(repo: Path) -> None:
    assert invoke("apply", DOMAIN).exit_code == 0
    change_directory(repo, [], DOMAIN, "An empty export")  # an empty read is always refused
    before = state_text(repo, DOMAIN)
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 4
    rows = table(result.stdout)
    assert rows[DOMAIN][0] == "refused"
    assert rows[DOMAIN][2].startswith("the directory gave no recipients while the state has 6")
    assert rows[OTHER][0] == "applied"
    assert state_text(repo, DOMAIN) == before
    assert "other.org: 4 to add" in git(repo, "log", "-1", "--format=%s")
    assert status(repo) == ""


def test_a_refused_limit_names_the_way_out(repo: Path) -> None:
    assert invoke("apply", DOMAIN).exit_code == 0
    path = spec_path(repo, DOMAIN)
    path.write_text(
        path.read_text(encoding="utf-8") + "policy:\n  limits:\n    max_deletes: 1\n", "utf-8"
    )
    change_directory(repo, users(1), DOMAIN, "Two left")
    result = invoke("run", DOMAIN)
    assert result.exit_code == 4
    assert "over policy.limits.max_deletes 1" in result.stdout
    assert "--allow-deletes 4" in result.stderr


def test_a_failing_domain_and_a_fine_one(repo: Path) -> None:
    ldif_path(repo, DOMAIN).write_text("version: 1\ndn: broken\nno colon here\n", "utf-8")
    commit_all(repo, "A broken export")
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 1
    rows = table(result.stdout)
    assert rows[DOMAIN][0] == "failed"
    assert str(ldif_path(repo, DOMAIN).name) in rows[DOMAIN][2]
    assert rows[OTHER][0] == "applied"
    assert not state_path(repo, DOMAIN).exists()
    assert state_path(repo, OTHER).exists()
    assert status(repo) == ""


def test_a_broken_spec_fails_only_its_domain(repo: Path) -> None:
    path = spec_path(repo, DOMAIN)
    path.write_text(path.read_text(encoding="utf-8") + "schedule: {every: 6x}\n", "utf-8")
    commit_all(repo, "A bad schedule")
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 1
    rows = table(result.stdout)
    assert rows[DOMAIN][0] == "failed"
    assert "example.com.yaml:5:" in rows[DOMAIN][2]
    assert rows[OTHER][0] == "applied"


def test_refused_and_failed_in_one_run_exits_1(repo: Path) -> None:
    add_domain(repo, THIRD, users(2, prefix="t"))
    assert invoke("apply", DOMAIN).exit_code == 0
    change_directory(repo, [], DOMAIN, "An empty export")
    ldif_path(repo, OTHER).unlink()
    commit_all(repo, "other.org's export is gone")
    result = invoke("run", DOMAIN, OTHER, THIRD)
    assert result.exit_code == 1
    assert [r[0] for r in table(result.stdout).values()] == ["refused", "failed", "applied"]


def test_a_held_domain_is_skipped_and_reported(repo: Path) -> None:
    assert invoke("apply", DOMAIN).exit_code == 0
    change_directory(repo, [*users(3), User("user04")], DOMAIN)
    assert invoke("apply", DOMAIN).exit_code == 0
    assert invoke("rollback", DOMAIN).exit_code == 0
    held_at = head(repo)
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 0, "a hold is the operator's decision, not a failure"
    rows = table(result.stdout)
    assert rows[DOMAIN][:2] == ["held", "-"]
    assert rows[DOMAIN][2].startswith("on hold since ")
    assert "rolled back to" in rows[DOMAIN][2]
    assert rows[OTHER][0] == "applied"
    assert git(repo, "log", "--format=%H", "-1", "--", "state/example.com.yaml") == held_at


def test_a_dirty_tree_refuses_the_whole_run(repo: Path) -> None:
    spec_path(repo, DOMAIN).write_text(
        SPEC_YAML.format(domain=DOMAIN, base_dn=BASE_DN) + "# edit\n"
    )
    before = commit_count(repo)
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 1
    assert "uncommitted changes in inventories/example.com.yaml" in result.stderr
    assert commit_count(repo) == before


# --- --jobs and --shard ---------------------------------------------------------------------------


def three_domains(root: Path) -> Path:
    repo = make_repo(root, users(4))
    add_domain(repo, OTHER, users(3, prefix="o"))
    add_domain(repo, THIRD, users(2, prefix="t"))
    return repo


def commits(repo: Path) -> list[str]:
    """Each commit's subject and body (not its id or date) and the state files it left."""
    log = git(repo, "log", "--format=%s%n%b%x00").split("\x00")
    states = [state_text(repo, d) for d in (DOMAIN, OTHER, THIRD)]
    return [entry.strip() for entry in log if entry.strip()] + states


def test_jobs_2_gives_the_same_commits_as_jobs_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for jobs in ("1", "2"):
        repo = three_domains(tmp_path / jobs)
        monkeypatch.chdir(repo)
        result = invoke("run", "--jobs", jobs, DOMAIN, OTHER, THIRD)
        assert result.exit_code == 0, result.stderr
        results.append(commits(repo))
    assert results[0] == results[1]
    assert len(results[0]) == 3 + 3 + 3  # three syncs, three inventory commits, three states
    assert [entry.split(":")[0] for entry in results[0][:3]] == [THIRD, OTHER, DOMAIN]


def test_shards_partition_the_domains() -> None:
    names = [f"d{n}.example" for n in range(300)]
    for count in range(1, 6):
        shares = [[n for n in names if Shard(i, count).holds(n)] for i in range(1, count + 1)]
        assert sorted(n for share in shares for n in share) == sorted(
            names
        )  # every domain exactly once
        assert all(shares), "300 names leave no share empty"
    # sha256, not Python's salted hash(): the same share on every machine and run.
    assert [Shard(i, 4).holds("example.com") for i in range(1, 5)].count(True) == 1
    expected = int.from_bytes(hashlib.sha256(b"example.com").digest()[:8], "big") % 4 + 1
    assert Shard(expected, 4).holds("example.com")


def test_shard_runs_cover_every_domain_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = three_domains(tmp_path)
    monkeypatch.chdir(repo)
    seen: list[str] = []
    for index in (1, 2, 3):
        result = invoke("run", "--shard", f"{index}/3", DOMAIN, OTHER, THIRD)
        assert result.exit_code == 0, result.stderr
        seen += table(result.stdout) if result.stdout else []
    assert sorted(seen) == sorted([DOMAIN, OTHER, THIRD])
    assert all(state_path(repo, d).exists() for d in (DOMAIN, OTHER, THIRD))


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1/0", "junk", "2", "-1/3", "1/3/4"])
def test_a_bad_shard_is_a_usage_error(repo: Path, bad: str) -> None:
    result = invoke("run", "--shard", bad)
    assert result.exit_code == 2
    assert "--shard" in result.stderr
    with pytest.raises(ValueError, match=r"I/N|from 1 to N"):
        parse_shard(bad)


def test_jobs_must_be_positive(repo: Path) -> None:
    assert invoke("run", "--jobs", "0").exit_code == 2


# --- against a real slapd -------------------------------------------------------------------------


def test_run_reads_slapd_and_a_dead_server_fails_only_its_domain(
    slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = (
        f"domain: {DOMAIN}\ndirectory:\n  flavor: openldap\n  servers: [{slapd.ldap_url}]\n"
        f"  tls: none\n  bind_dn: {READER_DN}\n  password: {{env: RUN_LDAP_PASSWORD}}\n"
        f"  base_dn: {slapd.base_dn}\n"
    )
    repo = make_repo(tmp_path, spec=spec)
    dead = SPEC_YAML.format(domain=OTHER, base_dn=BASE_DN).replace(
        f"  ldif: data/{OTHER}.ldif\n",
        f"  servers: [ldap://127.0.0.1:{free_port()}]\n  tls: none\n  timeout: 2\n",
    )
    spec_path(repo, OTHER).write_text(dead, encoding="utf-8")
    add_domain(repo, THIRD, users(2, prefix="t"))
    monkeypatch.chdir(repo)
    monkeypatch.setenv("RUN_LDAP_PASSWORD", "reader-secret")
    result = invoke("run", "--jobs", "2", DOMAIN, OTHER, THIRD)
    assert result.exit_code == 1, result.stderr
    rows = table(result.stdout)
    assert rows[DOMAIN][0] == "applied"
    assert rows[OTHER][0] == "failed"
    assert "127.0.0.1" in rows[OTHER][2]
    assert rows[THIRD][0] == "applied"
    recipients = state_text(repo, DOMAIN)
    assert "alice@example.com" in recipients and "bob@example.com" in recipients
    assert "reader-secret" not in result.stdout + result.stderr
    assert not state_path(repo, OTHER).exists()
