"""Benchmark: `reconciler history --address` over a long state history.

Builds a repository whose state/example.com.yaml has N recipients (one line each) and C commits,
each changing 1 % of the names; the traced address changes every tenth commit and is gone for
a stretch. Times `history --address` as the command (a new process) with the objects loose and
again after `git gc` (packed, as a real repository's are: each version is then rebuilt from
deltas), and, for comparison, parsing a few whole versions with the state parser.

    .venv/bin/python bench/bench_history.py              # 100k lines, 100 commits
    .venv/bin/python bench/bench_history.py --n 10000 --commits 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.recipient import Recipient  # noqa: E402
from reconciler.state import State, dump_state, parse_state  # noqa: E402

DOMAIN = "example.com"
TRACED = "user0050000@example.com"


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout


def recipients(n: int, version: int, traced_present: bool) -> dict[str, Recipient]:
    found = {}
    for i in range(n):
        address = f"user{i:07d}@example.com"
        # 1 % of the names change with each commit
        name = f"User {i} v{version}" if i % 100 == version % 100 else f"User {i}"
        found[address] = Recipient("mailbox", name=name, id=f"id-{i}", status="active")
    found.pop(TRACED, None)
    if traced_present:
        found[TRACED] = Recipient("mailbox", name=f"Traced v{version // 10}", id="traced")
    return found


def build(repo: Path, n: int, commits: int) -> None:
    git(repo, "init", "--quiet", "-b", "main")
    for key, value in (("user.name", "Bench"), ("user.email", "bench@example.invalid")):
        git(repo, "config", key, value)
    (repo / "state").mkdir()
    path = repo / "state" / f"{DOMAIN}.yaml"
    for version in range(commits):
        present = not (commits // 2 <= version < commits // 2 + 5)  # gone for five commits
        state = State(DOMAIN, recipients(n, version, present))
        path.write_text(dump_state(state, f"inventories/{DOMAIN}.yaml"), encoding="utf-8")
        git(repo, "add", "--all")
        trailers = f"Reconciler-Action: apply\nReconciler-Counts: update={n // 100}"
        message = f"Sync {version}\n\n{trailers}"
        env = {**os.environ, "GIT_COMMITTER_DATE": f"{1_700_000_000 + version * 3600} +0000"}
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"]
        git(repo, "commit", "--quiet", "-m", message, env=env)


def timed_history(repo: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "history", "--address", TRACED, "--repo", str(repo)],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, len(done.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="recipients (lines)")
    parser.add_argument("--commits", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        repo = Path(tmp)
        start = time.perf_counter()
        build(repo, options.n, options.commits)
        path = repo / "state" / f"{DOMAIN}.yaml"
        size = path.stat().st_size / 2**20
        print(f"built {options.commits} commits of a {options.n}-line state ({size:.1f} MiB)")
        print(f"  in {time.perf_counter() - start:.1f} s")
        seconds, events = timed_history(repo)
        print(f"history --address, loose objects:  {seconds:.2f} s ({events} events)")
        git(repo, "gc", "--quiet", "--aggressive")
        seconds, events = timed_history(repo)
        print(f"history --address, packed (gc):    {seconds:.2f} s ({events} events)")

        sample = min(5, options.commits)
        revs = git(repo, "rev-list", f"-{sample}", "HEAD").split()
        start = time.perf_counter()
        for rev in revs:
            text = git(repo, "show", f"{rev}:state/{DOMAIN}.yaml")
            state = parse_state(text, path, DOMAIN)
            _ = state.recipients.get(TRACED)
        whole = (time.perf_counter() - start) / sample * options.commits
        print(f"parsing every version whole instead: ~{whole:.1f} s (from {sample} versions)")


if __name__ == "__main__":
    main()
