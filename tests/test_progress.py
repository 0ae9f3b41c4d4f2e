"""Progress of long reads: told by the sources (per page, every few thousand LDIF records), shown
as one line rewritten in place on a terminal's stderr, silent on a pipe and with ``-q``; and no
colour or other escape sequence anywhere, NO_COLOR or not (the real command in a pseudo-terminal).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_slapd_tools
from gitrepo import add_domain, commit_all, isolate_git, ldif_path, make_repo, users
from slapd import BASE_DN, READER_DN, READER_PASSWORD, SlapdServer
from terminal import run_in_terminal

from reconciler import cli_progress
from reconciler.inventory import load_specs
from reconciler.reconcile import read_directory

DOMAIN = "example.com"
OTHER = "other.org"
COUNT = 2500  # users: two progress reports at 1000 and 2000 records, and one at the end
RECORDS = COUNT + 3  # and the LDIF's version line, domain root and OU


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("progress"), users(COUNT))


# --- what the sources tell -------------------------------------------------------------------


@pytest.mark.git
def test_an_ldif_read_tells_its_progress_every_thousand_records(big_repo: Path) -> None:
    (spec,) = load_specs(big_repo / "inventories", [DOMAIN])
    told: list[tuple[int, int]] = []
    _, result = read_directory(spec, progress=lambda entries, pages: told.append((entries, pages)))
    assert len(result.recipients) == 2 * COUNT
    # Records of the file: "version: 1" (a record to the parser), the domain root, the OU,
    # then the users; no pages in a file.
    assert told == [(1000, 0), (2000, 0), (RECORDS, 0)]


@pytest.fixture(scope="module")
def paged_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    require_slapd_tools()
    people = f"ou=People,{BASE_DN}"
    ldif = f"dn: {people}\nobjectClass: organizationalUnit\nou: People\n\n" + "".join(
        f"dn: uid=u{i:02},{people}\nobjectClass: inetOrgPerson\nuid: u{i:02}\ncn: U {i}\n"
        f"sn: {i}\nmail: u{i:02}@example.com\n\n"
        for i in range(25)
    )
    server = SlapdServer(tmp_path_factory.mktemp("paged"))
    server.load_ldif(ldif)
    with server:
        yield server


@pytest.mark.slapd
@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
@pytest.mark.parametrize("decoder", ["fast", "ldap3"])
def test_an_ldap_read_tells_its_progress_once_a_page(
    paged_slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", decoder)
    monkeypatch.setenv("PROGRESS_TEST_PASSWORD", READER_PASSWORD)
    inventory = tmp_path / "inventories"
    inventory.mkdir()
    (inventory / f"{DOMAIN}.yaml").write_text(
        f"domain: {DOMAIN}\ndirectory:\n  flavor: openldap\n"
        f"  servers: [{paged_slapd.ldap_url}]\n  tls: none\n  page_size: 10\n"
        f'  bind_dn: "{READER_DN}"\n  password: {{env: PROGRESS_TEST_PASSWORD}}\n',
        encoding="utf-8",
    )
    (spec,) = load_specs(inventory, [DOMAIN])
    told: list[tuple[int, int]] = []
    _, result = read_directory(spec, progress=lambda entries, pages: told.append((entries, pages)))
    assert len(result.recipients) == 25
    assert told == [(10, 1), (20, 2), (25, 3)]


# --- the progress line -----------------------------------------------------------------------


def test_the_progress_line_is_blanked_before_a_log_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Plain text only: the line is rewritten with \\r and blanked with spaces."""
    handler = cli_progress._ChatterHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    with cli_progress._PROGRESS.reading("example.com") as show:
        show(500, 1)
        show(1000, 2)
        handler.emit(logging.makeLogRecord({"msg": "a warning", "levelno": logging.WARNING}))
        show(5, 0)
    # the read is over: the line was blanked
    cli_progress._PROGRESS.clear()  # nothing showing: nothing written
    first = "example.com: 500 entries read (1 page)"
    second = "example.com: 1000 entries read (2 pages)"
    assert capsys.readouterr().err == (
        f"\r{first}\r{second}\r{' ' * len(second)}\ra warning\n"
        f"\rexample.com: 5 entries read\r{' ' * 27}\r"
    )


def test_the_progress_line_fits_in_one_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    with cli_progress._PROGRESS.reading("a-long-domain-name.example") as show:
        show(123456, 7)
    assert capsys.readouterr().err == "\ra-long-domain-name.\r" + " " * 19 + "\r"


def test_reads_at_once_share_the_line_in_the_order_they_started(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two reads in two threads (taking turns, so the expected output is exact): one line
    naming both with their counts; when one is over, the other alone; blanked at the end."""
    line = cli_progress._ProgressLine()
    turn = [threading.Event() for _ in range(6)]

    def read(domain: str, steps: list[tuple[int, int, int]], last: int) -> None:
        with line.reading(domain) as show:
            for wait, entries, done in steps:
                turn[wait].wait(5)
                show(entries, 1)
                turn[done].set()
            turn[last].wait(5)

    a = threading.Thread(target=read, args=("a.com", [(0, 100, 1), (2, 200, 3)], 4))
    b = threading.Thread(target=read, args=("b.com", [(1, 50, 2)], 3))
    a.start()
    b.start()
    turn[0].set()
    b.join(5)  # b.com's read is over after a.com's second report
    turn[4].set()
    a.join(5)
    both = "reading a.com 200 entries, b.com 50 entries"
    alone = "a.com: 200 entries read (1 page)"
    assert capsys.readouterr().err == (
        "\ra.com: 100 entries read (1 page)"
        "\rreading a.com 100 entries, b.com 50 entries"
        f"\r{both}"
        f"\r{alone.ljust(len(both))}"
        f"\r{' ' * len(alone)}\r"
    )


def test_a_log_record_never_lands_inside_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Threads reporting and logging at once: every write is a whole line or a whole record."""
    handler = cli_progress._ChatterHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))

    def read(domain: str) -> None:
        with cli_progress._PROGRESS.reading(domain) as show:
            for entries in range(1, 301):
                show(entries, 0)
                time.sleep(0.0005)  # let the other threads in
                if entries % 50 == 25:
                    handler.emit(logging.makeLogRecord({"msg": f"{domain} note {entries}"}))

    threads = [threading.Thread(target=read, args=(d,)) for d in ("a.com", "b.com", "c.com")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    err = capsys.readouterr().err
    records = [part for part in err.split("\n") if "note" in part]
    assert len(records) == 18
    for record in records:
        assert re.fullmatch(r" *\r?[abc]\.com note \d+", record.split("\r")[-1]), record
    assert "reading " in err  # the reads did overlap
    assert err.endswith("\r") and "note" not in err.split("\n")[-1]  # the line was blanked
    for segment in err.replace("\n", "\r").split("\r"):
        text = segment.strip()
        assert not text or re.fullmatch(
            r"[abc]\.com: \d+ entries read|reading( [abc]\.com \d+ entries,?)+|"
            r"[abc]\.com note \d+",
            text,
        ), segment


def in_terminal(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``reconciler ARGS --repo REPO`` in a pseudo-terminal: its exit code and output."""
    code, output = run_in_terminal([*args, "--repo", str(repo)], env=env)
    return code, output.decode("utf-8", "replace")


def piped(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "--repo", str(repo)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.git
def test_on_a_terminal_progress_is_one_line_rewritten_then_blanked(big_repo: Path) -> None:
    code, output = in_terminal(big_repo, "plan")
    assert code == 0, output
    expected = piped(big_repo, "plan").stdout.replace("\n", "\r\n")  # the terminal's newlines
    widest = f"{DOMAIN}: {RECORDS} entries read"
    assert output == (
        f"\r{DOMAIN}: 1000 entries read\r{DOMAIN}: 2000 entries read\r{widest}"
        f"\r{' ' * len(widest)}\r" + expected
    )


@pytest.mark.git
def test_quiet_or_not_a_terminal_no_progress(big_repo: Path) -> None:
    code, output = in_terminal(big_repo, "plan", "-q")
    assert code == 0, output
    assert "entries read" not in output
    assert "\r" not in output.replace("\r\n", "\n")

    done = piped(big_repo, "plan", "-v")
    assert done.returncode == 0, done.stderr
    assert "entries read" not in done.stderr
    assert "\r" not in done.stderr + done.stdout


def progress_then_results(output: str, widest: str) -> str:
    """The progress line of one read in a terminal's output, checked; what follows it."""
    head = (
        f"\r{DOMAIN}: 1000 entries read\r{DOMAIN}: 2000 entries read\r{widest}"
        f"\r{' ' * len(widest)}\r"
    )
    assert output.startswith(head), output[:300]
    rest = output[len(head) :]
    assert "entries read" not in rest
    assert "\r" not in rest.replace("\r\n", "\n")
    return rest


@pytest.mark.git
def test_apply_shows_its_reads_progress_on_a_terminal(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, users(COUNT))
    code, output = in_terminal(repo, "apply")
    assert code == 0, output[-2000:]
    rest = progress_then_results(output, f"{DOMAIN}: {RECORDS} entries read")
    assert f"Committed {DOMAIN} as " in rest


@pytest.mark.git
def test_run_shows_its_reads_progress_on_a_terminal(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, users(COUNT))
    code, output = in_terminal(repo, "run", DOMAIN)
    assert code == 0, output[-2000:]
    rest = progress_then_results(output, f"{DOMAIN}: {RECORDS} entries read")
    assert re.search(rf"^{re.escape(DOMAIN)} +applied ", rest, re.MULTILINE), rest


@pytest.mark.git
def test_run_with_jobs_shares_one_line_between_its_reads(tmp_path: Path) -> None:
    # Reads long enough (twenty progress reports each) to overlap for certain in their
    # threads, which take turns every 5 ms at the most.
    count = 20 * 1000
    records = count + 3
    repo = make_repo(tmp_path, users(count))
    add_domain(repo, OTHER, users(count, prefix="o"))
    code, output = in_terminal(repo, "run", "--jobs", "2", DOMAIN, OTHER)
    assert code == 0, output[-2000:]
    line, table = output.split("DOMAIN ", 1)  # the progress line, then the summary table
    assert "\r" not in table.replace("\r\n", "\n")
    names = rf"(?:{re.escape(DOMAIN)}|{re.escape(OTHER)})"
    *writes, blank, after = line.split("\r")[1:]
    assert any(w.startswith("reading ") for w in writes), writes  # the reads overlapped
    for written in writes:  # each a whole line: one read, or every read going on
        assert re.fullmatch(
            rf"(?:{names}: \d+ entries read|reading {names} \d+ entries, {names} \d+ entries)"
            r" *",
            written,
        ), writes
    assert blank.strip() == "" and after == ""  # blanked when the reads are over
    for domain in (DOMAIN, OTHER):  # each read's last count was shown
        assert f"{domain}: {records} entries read" in line or re.search(
            rf"{re.escape(domain)} {records} entries", line
        ), writes
    for domain in (DOMAIN, OTHER):
        assert re.search(rf"^{re.escape(domain)} +applied ", output.replace("\r\n", "\n"), re.M)


@pytest.mark.git
@pytest.mark.parametrize(
    ("command", "after"),
    [(["apply"], "Error: "), (["run", DOMAIN], f"{DOMAIN}: ")],
    ids=["apply", "run"],
)
def test_a_read_that_fails_blanks_the_line_before_the_error(
    tmp_path: Path, command: list[str], after: str
) -> None:
    repo = make_repo(tmp_path, users(COUNT))
    export = ldif_path(repo)
    export.write_text(
        export.read_text(encoding="utf-8") + f"\ndn: cn=broken,{BASE_DN}\nnot ldif\n",
        encoding="utf-8",
    )
    commit_all(repo, "A broken export")
    code, output = in_terminal(repo, *command)
    assert code == 1, output[-2000:]
    shown = f"{DOMAIN}: 2000 entries read"
    head = f"\r{DOMAIN}: 1000 entries read\r{shown}\r{' ' * len(shown)}\r"
    assert output.startswith(head + after + str(export)), output[:500]
    assert "unreadable LDIF record" in output
    assert "\r" not in output[len(head) :].replace("\r\n", "\n")


@pytest.mark.git
@pytest.mark.parametrize("command", [["apply"], ["run", DOMAIN, OTHER, "--jobs", "2"]])
def test_apply_and_run_are_silent_on_a_pipe_and_with_quiet(
    tmp_path: Path, command: list[str]
) -> None:
    repo = make_repo(tmp_path, users(COUNT))
    add_domain(repo, OTHER, users(COUNT, prefix="o"))
    done = piped(repo, *command)
    assert done.returncode == 0, done.stderr
    assert "entries" not in done.stderr
    assert "\r" not in done.stderr + done.stdout
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", "HEAD~2"], check=True)
    code, output = in_terminal(repo, *command, "-q")
    assert code == 0, output[-2000:]
    assert "entries read" not in output and "reading " not in output
    assert "\r" not in output.replace("\r\n", "\n")


# Commands that print something: help, results, chatter and an error.
OUTPUTS = [
    ["plan", "--help"],
    ["plan"],
    ["show", "example.com"],
    ["export", "example.com", "--format", "csv"],
    ["history", "--address", "nope"],
]


@pytest.mark.git
@pytest.mark.parametrize("no_color", [None, "1"], ids=["colour-allowed", "NO_COLOR"])
def test_no_colour_or_escape_sequence_on_a_terminal(tmp_path: Path, no_color: str | None) -> None:
    """The tool writes no colour at all, so NO_COLOR has nothing to turn off; this keeps a
    dependency (Click, Typer's Rich) from bringing some in."""
    repo = make_repo(tmp_path, users(3))
    assert in_terminal(repo, "apply", "-q")[0] == 0
    env = {"NO_COLOR": no_color} if no_color else {}
    for args in OUTPUTS:
        code, output = in_terminal(repo, *args, env=env)
        assert code == (2 if "nope" in args else 0), (args, output)
        assert output, args
        assert "\x1b" not in output, (args, output)


@pytest.mark.git
def test_no_escape_sequence_on_a_pipe(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, users(3))
    assert piped(repo, "apply", "-q").returncode == 0
    for args in OUTPUTS:
        done = piped(repo, *args)
        assert done.stdout + done.stderr, args
        assert "\x1b" not in done.stdout + done.stderr, args
        assert "\r" not in done.stdout + done.stderr, args
