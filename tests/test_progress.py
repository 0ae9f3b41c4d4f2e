"""Progress of long reads: told by the sources (per page, every few thousand LDIF records), shown
as one line rewritten in place on a terminal's stderr, silent on a pipe and with ``-q``; and no
colour or other escape sequence anywhere, NO_COLOR or not (the real command in a pseudo-terminal).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_slapd_tools
from gitrepo import isolate_git, make_repo, users
from slapd import BASE_DN, READER_DN, READER_PASSWORD, SlapdServer
from terminal import run_in_terminal

from reconciler import cli_progress
from reconciler.inventory import load_specs
from reconciler.reconcile import read_directory

DOMAIN = "example.com"
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
