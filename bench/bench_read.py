"""Benchmark: reconciler's read, plan and apply against `ldapsearch` on the same slapd and query.

Loads N generated users (3-4 addresses each) into a private slapd with slapadd, then times
`ldapsearch` (the C client, paged like reconciler) and `reconciler plan` on the same filter and
attributes, and prints the times, the ratio and the peak memory of each. Ratios, not absolute
times, are what to compare across machines.

    .venv/bin/python bench/bench_read.py            # 100k users
    .venv/bin/python bench/bench_read.py --n 10000 --repeat 3
    .venv/bin/python bench/bench_read.py --n 1000000

Measured, each run right after an ldapsearch run (on a shared machine the speed drifts
within a minute; a pair sees the same drift, and the median pair counts): reading the entries
alone; `plan` against an empty state; the first `apply`; `plan` in sync; `apply` after 1 % of
the users were renamed, each with its peak RSS.

The package is byte-compiled first, as an installed one is (PYTHONDONTWRITEBYTECODE, which
some shells set, would otherwise make every run compile it again: 0.05 s of each). The first
line says whether the install runs the mypyc-compiled modules; RECONCILER_COMPILED=0 measures
the same install as pure Python.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from slapd import BASE_DN, SlapdServer, find_tool  # noqa: E402

from reconciler import COMPILED, __version__  # noqa: E402  (what it runs)

FILTER = "(&(objectClass=inetOrgPerson)(mail=*))"
ATTRIBUTES = ["mail", "proxyAddresses", "displayName", "entryUUID"]


def write_users(path: Path, n: int) -> None:
    """N inetOrgPerson users with AD-style proxyAddresses: 3 or 4 addresses each."""
    with path.open("w", encoding="utf-8") as out:
        out.write(f"dn: ou=People,{BASE_DN}\nobjectClass: organizationalUnit\nou: People\n\n")
        for i in range(n):
            uid = f"user{i:07d}"
            out.write(
                f"dn: uid={uid},ou=People,{BASE_DN}\n"
                "objectClass: inetOrgPerson\nobjectClass: user\n"
                f"uid: {uid}\ncn: User {i}\nsn: {i}\ndisplayName: User Number {i}\n"
                f"mail: {uid}@example.com\n"
                f"proxyAddresses: SMTP:{uid}@example.com\n"
                f"proxyAddresses: smtp:u{i}@example.com\n"
                f"proxyAddresses: smtp:{uid}@example.net\n"
                + (f"proxyAddresses: smtp:alt{i}@example.com\n" if i % 2 else "")
                + f"proxyAddresses: X500:/o=Example/ou=Exchange/cn=Recipients/cn={uid}\n"
                f"entryUUID: {uuid.UUID(int=i)}\n\n"
            )


def run_measured(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time in seconds and peak RSS in MiB of one child process (stdout discarded)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.returncode not in (0, 3):
        raise SystemExit(f"{args[0]} failed ({process.returncode}): {stderr.strip()}")
    return elapsed, usage.ru_maxrss / 1024


def write_inventory(directory: Path, server: SlapdServer, page_size: int) -> None:
    inventory = directory / "inventories"
    inventory.mkdir()
    (inventory / "example.com.yaml").write_text(
        "domain: example.com\n"
        "domain_aliases: [example.net]\n"
        "directory:\n"
        "  flavor: openldap\n"
        f"  servers: [{server.ldap_url}]\n"
        "  tls: none\n"
        f"  bind_dn: {server.bind_dn}\n"
        "  password: {env: BENCH_LDAP_PASSWORD}\n"
        f"  base_dn: {BASE_DN}\n"
        f"  page_size: {page_size}\n"
        "  timeout: 60\n"
        "users:\n"
        f'  filter: "{FILTER}"\n'
        "  alias_attributes: [proxyAddresses]\n"
        "  name_attribute: displayName\n"
    )


# The entries read as a plan reads them: the spec checked while the LDAP client is imported,
# and the cyclic garbage collector paused (what reconcile.bulk_objects does; importing
# reconcile would be the plan's start-up, not the read's).
READ_ONLY = """
import gc
import sys
from pathlib import Path
from reconciler.directory import import_ldap_client, open_source
from reconciler.inventory import load_specs
(spec,) = load_specs(Path(sys.argv[1]), meanwhile=import_ldap_client)
gc.disable()
count = sum(1 for _ in open_source(spec).entries())
assert count == int(sys.argv[2]), count
"""


IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def git(work: Path, *args: str) -> None:
    env = {**os.environ, **IDENTITY}
    subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True, env=env)


def rename_some(server: SlapdServer, n: int, share: float) -> int:
    """Change the displayName of ``share`` of the users: the "1 % changed" case."""
    step = max(1, round(1 / share))
    changed = list(range(0, n, step))
    ldif = "".join(
        f"dn: uid=user{i:07d},ou=People,{BASE_DN}\nchangetype: modify\n"
        f"replace: displayName\ndisplayName: Renamed {i}\n-\n\n"
        for i in changed
    )
    server.ldapmodify(ldif)
    return len(changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of users")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument(
        "--repeat", type=int, default=3, help="paired runs of each plan and read; the median counts"
    )
    options = parser.parse_args()
    n = options.n
    compileall.compile_dir(ROOT / "reconciler", quiet=1)

    results: list[tuple[str, list[tuple[float, float, float, float]]]] = []
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        work = Path(tmp)
        server = SlapdServer(work / "slapd")
        users = work / "users.ldif"
        write_users(users, n)
        started = time.perf_counter()
        server.slapadd(users)
        print(
            f"loaded {n} users with slapadd in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        server.start()
        try:
            write_inventory(work, server, options.page_size)
            git(work, "init", "-q", "-b", "main")
            git(work, "add", "inventories")
            git(work, "commit", "-q", "-m", "bench inventory")
            env = {**os.environ, **IDENTITY, "BENCH_LDAP_PASSWORD": server.password}
            ldapsearch = [
                find_tool("ldapsearch"),
                "-LLL",
                "-x",
                "-H",
                server.ldap_url,
                "-D",
                server.bind_dn,
                "-w",
                server.password,
                "-b",
                BASE_DN,
                "-E",
                f"pr={options.page_size}/noprompt",
                FILTER,
                *ATTRIBUTES,
            ]
            reconciler = [sys.executable, "-m", "reconciler"]
            common = ["-q", "--repo", str(work)]
            read = [sys.executable, "-c", READ_ONLY, str(work / "inventories"), str(n)]
            _, ldapsearch_rss = run_measured(ldapsearch, env, work)  # (and slapd's cache warm)

            def paired(name: str, args: list[str], repeat: int = options.repeat) -> None:
                """Each run right after an ldapsearch run: on a shared machine the speed drifts
                within a minute, and a pair sees the same drift. The median pair counts."""
                pairs = []
                for _ in range(repeat):
                    base, _ = run_measured(ldapsearch, env, work)
                    time_, rss = run_measured(args, env, work)
                    pairs.append((time_ / base, time_, rss, base))
                results.append((name, pairs))

            paired("read (entries only)", read)
            paired("plan, empty state", [*reconciler, "plan", *common])
            paired("apply, empty state", [*reconciler, "apply", *common], repeat=1)
            paired("plan, in sync", [*reconciler, "plan", *common])
            changed = rename_some(server, n, 0.01)
            paired(f"apply, {changed} changed", [*reconciler, "apply", *common], repeat=1)
        finally:
            server.stop()

    bases = sorted(base for _, pairs in results for *_, base in pairs)
    print(f"reconciler {__version__}: {COMPILED}")
    print(
        f"{n} users, page size {options.page_size}; each run paired with an ldapsearch run "
        f"just before it (ldapsearch {bases[0]:.2f} to {bases[-1]:.2f} s, median "
        f"{statistics.median(bases):.2f} s, peak RSS {ldapsearch_rss:.1f} MiB); "
        "the median pair of each is shown"
    )
    for name, pairs in results:
        ratio, time_, rss, _ = sorted(pairs)[(len(pairs) - 1) // 2]
        spread = f"  (pairs {min(pairs)[0]:.2f} to {max(pairs)[0]:.2f}x)" if len(pairs) > 1 else ""
        print(f"{name:<24} {time_:8.2f} s  {ratio:6.2f}x   peak RSS {rss:7.1f} MiB{spread}")


if __name__ == "__main__":
    main()
