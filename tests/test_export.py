"""`reconciler export DOMAIN --format postfix|csv|json [-o FILE]`: the committed state for mail
filters, exact output per format, atomic files, and every way it can go wrong."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import pytest
from gitrepo import commit_all, invoke, isolate_git, make_repo, state_path, users

from reconciler.export import ExportError, ExportFormat, export_chunks
from reconciler.recipient import Recipient
from reconciler.state import Hold, State, dump_state

pytestmark = pytest.mark.git

DOMAIN = "example.com"
# A state with a bit of everything: a quoted name with a comma, an IDN alias domain (stored in
# its xn-- form), a UTF-8 local part, a deactivated mailbox and alias, a list.
RECIPIENTS = {
    "alice@example.com": Recipient(
        "mailbox", name='Smith, Alice "Al"', id="id-1", status="active", username="asmith"
    ),
    "alice@xn--bcher-kva.example": Recipient("alias", target="alice@example.com"),
    "bob@example.com": Recipient("mailbox", name="Bob Jones", id="id-2", status="disabled"),
    "b.jones@example.com": Recipient("alias", status="disabled", target="bob@example.com"),
    "jörg@example.com": Recipient("mailbox", name="Jörg Müller", id="id-3"),
    "sales@example.com": Recipient(
        "list", name="Sales, EMEA", members=("alice@example.com", "jörg@example.com")
    ),
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose committed state is RECIPIENTS; the current directory."""
    path = make_repo(tmp_path, users(1))
    write_state_file(path, State(DOMAIN, RECIPIENTS))
    commit_all(path, "State")
    monkeypatch.chdir(path)
    return path


def write_state_file(repo: Path, state: State) -> Path:
    path = state_path(repo, state.domain)
    path.parent.mkdir(exist_ok=True)
    path.write_text(dump_state(state, f"inventories/{state.domain}.yaml"), encoding="utf-8")
    return path


def exported(*args: str) -> str:
    result = invoke("export", DOMAIN, *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


# --- the formats -----------------------------------------------------------------------------


def test_postfix_is_a_sorted_map_of_the_active_recipients_of_every_kind(repo: Path) -> None:
    assert exported("--format", "postfix") == (
        "alice@example.com OK\n"
        "alice@xn--bcher-kva.example OK\n"
        "jörg@example.com OK\n"
        "sales@example.com OK\n"
    )


def test_postfix_with_the_disabled_recipients(repo: Path) -> None:
    assert exported("--format", "postfix", "--include-disabled") == (
        "alice@example.com OK\n"
        "alice@xn--bcher-kva.example OK\n"
        "b.jones@example.com OK\n"
        "bob@example.com OK\n"
        "jörg@example.com OK\n"
        "sales@example.com OK\n"
    )


CSV_HEADER = "address,kind,status,name,target,members,id,username\n"


def test_csv_has_a_header_and_quotes_what_needs_it(repo: Path) -> None:
    assert exported("--format", "csv") == (
        CSV_HEADER + 'alice@example.com,mailbox,active,"Smith, Alice ""Al""",,,id-1,asmith\n'
        "alice@xn--bcher-kva.example,alias,active,,alice@example.com,,,\n"
        "jörg@example.com,mailbox,active,Jörg Müller,,,id-3,\n"
        'sales@example.com,list,active,"Sales, EMEA",,alice@example.com jörg@example.com,,\n'
    )


def test_csv_with_the_disabled_recipients_reads_back(repo: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(exported("--format", "csv", "--include-disabled"))))
    assert [row["address"] for row in rows] == sorted(RECIPIENTS)
    by_address = {row["address"]: row for row in rows}
    assert by_address["bob@example.com"]["status"] == "disabled"
    assert by_address["b.jones@example.com"] == {
        "address": "b.jones@example.com",
        "kind": "alias",
        "status": "disabled",
        "name": "",
        "target": "bob@example.com",
        "members": "",
        "id": "",
        "username": "",
    }
    assert by_address["alice@example.com"]["name"] == 'Smith, Alice "Al"'


def test_json_is_the_state_sorted_one_recipient_a_line(repo: Path) -> None:
    text = exported("--format", "json")
    assert text.splitlines()[0] == (
        '{"format_version": 1, "domain": "example.com", "hold": null, "recipients": {'
    )
    assert text.splitlines()[1] == (
        '  "alice@example.com": {"kind": "mailbox", "name": "Smith, Alice \\"Al\\"", '
        '"id": "id-1", "status": "active", "username": "asmith"},'
    )
    document = json.loads(text)
    assert list(document["recipients"]) == [
        "alice@example.com",
        "alice@xn--bcher-kva.example",
        "jörg@example.com",
        "sales@example.com",
    ]
    assert document["recipients"]["sales@example.com"] == {
        "kind": "list",
        "name": "Sales, EMEA",
        "members": ["alice@example.com", "jörg@example.com"],
    }


def test_json_with_the_disabled_recipients(repo: Path) -> None:
    document = json.loads(exported("--format", "json", "--include-disabled"))
    assert list(document["recipients"]) == sorted(RECIPIENTS)
    assert document["recipients"]["bob@example.com"]["status"] == "disabled"


def test_an_empty_state_exports_empty_documents() -> None:
    empty = State(DOMAIN)
    assert "".join(export_chunks(empty, ExportFormat.postfix)) == ""
    assert "".join(export_chunks(empty, ExportFormat.csv)) == CSV_HEADER
    assert json.loads("".join(export_chunks(empty, ExportFormat.json)))["recipients"] == {}


def test_large_states_come_in_pieces_that_join_to_the_same_document() -> None:
    many = {f"u{n:05d}@example.com": Recipient("mailbox", name=f"U {n}") for n in range(9000)}
    state = State(DOMAIN, many)
    for output_format in ExportFormat:
        pieces = list(export_chunks(state, output_format))
        assert len(pieces) >= 3, output_format  # 4096 lines a piece
    document = json.loads("".join(export_chunks(state, ExportFormat.json)))
    assert list(document["recipients"]) == sorted(many)
    lines = "".join(export_chunks(state, ExportFormat.csv)).splitlines()
    assert len(lines) == 9001


def test_a_held_domain_exports_its_committed_state(repo: Path) -> None:
    held = State(DOMAIN, RECIPIENTS, Hold("rolled back to 0123456789", "2026-03-01T10:00:00Z"))
    write_state_file(repo, held)
    result = invoke("export", DOMAIN, "--format", "postfix")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "alice@example.com OK"
    assert result.stderr == (
        "note: example.com is on hold (rolled back to 0123456789); exporting its committed state\n"
    )
    assert json.loads(exported("--format", "json", "-q"))["hold"] == {
        "reason": "rolled back to 0123456789",
        "since": "2026-03-01T10:00:00Z",
    }


# --- -o FILE: atomic ---------------------------------------------------------------------------


def test_output_file_is_written_whole_with_its_mode_kept(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "maps" / "relay_recipients"
    result = invoke("export", DOMAIN, "--format", "postfix", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"exported example.com to {target}\n"
    assert target.read_text(encoding="utf-8") == exported("--format", "postfix")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # a new file: readable by the filter

    target.chmod(0o640)
    assert invoke("export", DOMAIN, "--format", "csv", "--out", str(target)).exit_code == 0
    assert target.read_text(encoding="utf-8").startswith(CSV_HEADER)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["relay_recipients"]  # no temp


def test_a_failing_export_leaves_the_old_file_whole(repo: Path, tmp_path: Path) -> None:
    """The bad address comes after more than a piece's worth of lines: the temporary file had
    been written to when the export failed, and was thrown away."""
    target = tmp_path / "relay_recipients"
    target.write_text("old@example.com OK\n", encoding="utf-8")
    target.chmod(0o600)
    recipients = {
        f"u{n:05d}@example.com": Recipient("alias", target="x@example.com") for n in range(5000)
    }
    recipients["zz top@example.com"] = Recipient("mailbox", name="A space")  # edited by hand
    write_state_file(repo, State(DOMAIN, recipients))

    result = invoke("export", DOMAIN, "--format", "postfix", "-o", str(target))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: 'zz top@example.com' cannot be a key of a Postfix lookup table (a leading '#' "
        "or whitespace); nothing was exported\n"
        "  correct the address in the directory, or export --format csv or json\n"
    )
    assert target.read_text(encoding="utf-8") == "old@example.com OK\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".relay")] == []

    # On stdout too nothing is written unless all of it can be.
    to_stdout = invoke("export", DOMAIN, "--format", "postfix")
    assert (to_stdout.exit_code, to_stdout.stdout) == (1, "")
    # The other formats can say it.
    assert "\nzz top@example.com,mailbox,active,A space,,,,\n" in exported("--format", "csv")


def test_a_comment_sign_cannot_start_a_postfix_key() -> None:
    state = State(DOMAIN, {"#hash@example.com": Recipient("alias", target="a@example.com")})
    with pytest.raises(ExportError, match=r"'#hash@example\.com' cannot be a key"):
        "".join(export_chunks(state, ExportFormat.postfix))


def test_an_unwritable_output_is_an_error(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    (target / "kept").write_text("x", encoding="utf-8")
    result = invoke("export", DOMAIN, "--format", "postfix", "-o", str(target))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: cannot write {target}: ")
    assert result.stderr.endswith(f"\n  {target} was left as it was\n")
    assert sorted(p.name for p in target.iterdir()) == ["kept"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rules_still_export_and_can_go_to_a_file(repo: Path, tmp_path: Path) -> None:
    to_stdout = invoke("export", DOMAIN, "--rules")
    assert to_stdout.exit_code == 0, to_stdout.output
    assert to_stdout.stdout.splitlines()[0] == "order,origin,type,attribute,regex,format"
    target = tmp_path / "rules.csv"
    assert invoke("export", DOMAIN, "--rules", "-o", str(target)).exit_code == 0
    assert target.read_text(encoding="utf-8") == to_stdout.stdout


# --- errors -------------------------------------------------------------------------------------


def test_a_domain_never_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(make_repo(tmp_path))
    result = invoke("export", DOMAIN, "--format", "postfix")
    assert result.exit_code == 1
    assert result.stdout == ""
    path = Path.cwd() / "state" / "example.com.yaml"
    assert result.stderr == (
        f"Error: example.com has no state file {path}: it was never applied\n"
        "  apply it first: reconciler apply example.com\n"
    )


def test_an_unknown_domain(repo: Path) -> None:
    result = invoke("export", "example.org", "--format", "json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: example.org has no state file {repo / 'state' / 'example.org.yaml'} and no "
        "spec: an unknown domain\n"
        "  check the domain name; state/ holds one file per synced domain\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "say what to export, one of: --format postfix|csv|json", id="neither"),
        pytest.param(["--rules", "--format", "csv"], "say what to export, one of", id="both"),
        pytest.param(["--rules", "--include-disabled"], "goes with --format", id="disabled"),
        pytest.param(["--format", "xml"], "'xml' is not one of", id="bad-format"),
    ],
)
def test_usage_errors(repo: Path, args: list[str], message: str) -> None:
    result = invoke("export", DOMAIN, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


def test_an_unreadable_state_file(repo: Path) -> None:
    state_path(repo).write_text("domain: example.com\nrecipients: [\n", encoding="utf-8")
    result = invoke("export", DOMAIN, "--format", "postfix")
    assert result.exit_code == 1
    assert f"{state_path(repo)}:3: the state file is not valid YAML" in result.stderr


def test_the_state_file_is_read_not_written(repo: Path) -> None:
    before = state_path(repo).read_bytes()
    mtime = state_path(repo).stat().st_mtime_ns
    for output_format in ("postfix", "csv", "json"):
        exported("--format", output_format)
    assert state_path(repo).read_bytes() == before
    assert state_path(repo).stat().st_mtime_ns == mtime
