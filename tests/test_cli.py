"""The command line's contract (DESIGN.md §5): exact exit codes, results on stdout, chatter and
one ``Error: …`` line on stderr, tracebacks only with ``--debug``, every command documented."""

from __future__ import annotations

import gc
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import typer
from gitrepo import (
    DEMO_INVENTORY,
    DOMAIN,
    PROJECT_ROOT,
    head,
    invoke,
    isolate_git,
    make_repo,
    spec_path,
    state_path,
    status,
    users,
)
from typer.testing import Result

from reconciler import COMPILED, __version__
from reconciler.cli import app, main

pytestmark = pytest.mark.git

FIRST_PLAN = [
    "  + user01.alias@example.com  alias → user01@example.com",
    '  + user01@example.com  mailbox "User 01"',
    "  + user02.alias@example.com  alias → user02@example.com",
    '  + user02@example.com  mailbox "User 02"',
    "  + user03.alias@example.com  alias → user03@example.com",
    '  + user03@example.com  mailbox "User 03"',
    "example.com: 6 to add, 0 to update, 0 to remove (0 → 6 recipients)",
    "Plan: 6 to add, 0 to update, 0 to remove in 1 of 1 domain.",
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository whose directory has 3 users, never synced."""
    return make_repo(tmp_path, users(3))


def assert_error(result: Result, code: int, *fragments: str) -> None:
    """Exit ``code``; nothing on stdout; stderr is one ``Error: …`` line (and its indented hint),
    naming every fragment, with no traceback."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines, "nothing on stderr"
    assert lines[0].startswith("Error: ")
    assert [line for line in lines if line.startswith("Error")] == [lines[0]]
    assert all(line.startswith("  ") for line in lines[1:]), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


# --- --version, validate ---------------------------------------------------------------------


def test_version_prints_the_version_on_stdout() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"reconciler {__version__} ({COMPILED})\n"
    assert result.stderr == ""


def test_main_leaves_what_the_command_made_to_exit_without_a_last_collection(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The objects the exiting frames still hold are frozen, so the collection at interpreter
    exit skips them (a first plan's changes: half a second at 100k users)."""
    monkeypatch.setattr(sys, "argv", ["reconciler", "--version"])
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith("reconciler ")
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_validate_the_demo_inventory() -> None:
    result = invoke("validate", "-i", str(DEMO_INVENTORY))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "1 domain spec valid\n"


def test_validate_quiet_says_nothing_when_valid() -> None:
    result = invoke("validate", "-q", "-i", str(DEMO_INVENTORY))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


SPEC_HEAD = "domain: example.com\ndirectory:\n  ldif: data/example.com.ldif\n"


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        pytest.param(
            SPEC_HEAD + "  flavr: openldap\n",
            "4:3",
            "unknown key 'flavr'; did you mean 'flavor'? (at directory/flavr)",
            id="unknown-key",
        ),
        pytest.param(
            SPEC_HEAD + "  flavor: openldp\n",
            "4:11",
            "'openldp' is not one of active_directory, openldap, generic; "
            "did you mean 'openldap'? (at directory/flavor)",
            id="bad-enum",
        ),
        pytest.param(
            SPEC_HEAD + 'exclude: "nobody@*"\n',
            "4:10",
            "expected a list, got a string ('nobody@*') (at exclude)",
            id="wrong-type",
        ),
        pytest.param(
            SPEC_HEAD + 'users:\n  filter: "(&(mail=*)"\n',
            "5:11",
            "invalid LDAP filter: ",
            id="bad-filter",
        ),
        pytest.param(
            "domain: example.org\ndirectory:\n  ldif: data/example.com.ldif\n",
            "1:9",
            "domain 'example.org' does not match the file name",
            id="domain-not-file-name",
        ),
        pytest.param(
            "domain: example.com\ndirectory: [\n",
            "3:1",
            "expected the node content",
            id="yaml-syntax",
        ),
    ],
)
def test_validate_broken_spec_points_at_file_line_col(
    tmp_path: Path, spec: str, where: str, message: str
) -> None:
    repo = make_repo(tmp_path, spec=spec)
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.stdout == ""
    problem, summary = result.stderr.splitlines()
    assert problem.startswith(f"{spec_path(repo)}:{where}: ")
    assert message in problem
    assert summary == "Error: 1 problem found"


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    spec = SPEC_HEAD + "  flavr: openldap\nusers:\n  mail_attribute: 3\n"
    repo = make_repo(tmp_path, spec=spec)
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{spec_path(repo)}:4:3: unknown key 'flavr'; did you mean 'flavor'? (at directory/flavr)",
        f"{spec_path(repo)}:6:19: expected a string, got an integer (3) (at users/mail_attribute)",
        "Error: 2 problems found",
    ]


# --- plan ------------------------------------------------------------------------------------


def test_plan_prints_the_changes_and_a_summary(repo: Path) -> None:
    result = invoke("plan", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    header, *rest = result.stdout.splitlines()
    assert header.startswith(f"{DOMAIN}  (LDIF ")
    assert "example.com.ldif: 3 " in header
    assert rest == FIRST_PLAN
    assert result.stderr == ""


def test_plan_detailed_exitcode_is_3_with_changes_and_0_in_sync(repo: Path) -> None:
    pending = invoke("plan", "--detailed-exitcode", "--repo", str(repo))
    assert pending.exit_code == 3
    assert pending.stdout.splitlines()[1:] == FIRST_PLAN
    assert pending.stderr == ""

    assert invoke("apply", "--repo", str(repo)).exit_code == 0

    in_sync = invoke("plan", "--detailed-exitcode", "--repo", str(repo))
    assert in_sync.exit_code == 0, in_sync.output
    assert in_sync.stdout.splitlines()[1:] == [
        "example.com: in sync (6 recipients)",
        "Plan: no changes in 1 domain.",
    ]


def test_plan_json_is_versioned_and_valid(repo: Path) -> None:
    result = invoke("plan", "--format", "json", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    schema = json.loads((PROJECT_ROOT / "schemas" / "plan.schema.json").read_text("utf-8"))
    jsonschema.Draft7Validator(schema).validate(document)

    assert document["format_version"] == 1
    assert document["generator"] == f"reconciler {__version__}"
    assert document["totals"] == {"add": 6, "update": 0, "remove": 0}
    (domain,) = document["domains"]
    assert domain["domain"] == DOMAIN
    assert domain["counts"] == {"add": 6, "update": 0, "remove": 0}
    assert domain["existing_count"] == 0
    assert domain["refusals"] == []
    assert [(c["action"], c["address"]) for c in domain["changes"]] == [
        ("add", f"user0{n}{suffix}@example.com") for n in (1, 2, 3) for suffix in (".alias", "")
    ]
    assert domain["changes"][1]["new"]["name"] == "User 01"
    assert domain["changes"][0]["new"] == {"kind": "alias", "target": "user01@example.com"}


def test_plan_json_with_detailed_exitcode(repo: Path) -> None:
    result = invoke("plan", "--format", "json", "--detailed-exitcode", "--repo", str(repo))
    assert result.exit_code == 3
    assert json.loads(result.stdout)["totals"]["add"] == 6


def test_plan_of_the_demo_copied_into_a_repository(tmp_path: Path) -> None:
    """The newcomer's first run: the shipped demo works with no server, then converges."""
    repo = make_repo(tmp_path, inventory=DEMO_INVENTORY)
    first = invoke("plan", "--detailed-exitcode", "--repo", str(repo))
    assert first.exit_code == 3, first.output
    assert "not managed: " in first.stdout
    assert any(line.startswith("  + ") for line in first.stdout.splitlines())
    assert invoke("apply", "--repo", str(repo)).exit_code == 0
    again = invoke("plan", "--detailed-exitcode", "--repo", str(repo))
    assert again.exit_code == 0, again.output
    assert again.stdout.endswith("Plan: no changes in 1 domain.\n")


def test_plan_of_named_domains(repo: Path) -> None:
    result = invoke("plan", DOMAIN, "--repo", str(repo))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1:] == FIRST_PLAN


def test_plan_from_a_subdirectory_finds_the_repository(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo / "inventories" / "data")
    result = invoke("plan")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == FIRST_PLAN


def test_options_from_environment_variables(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECONCILER_REPO", str(repo))
    result = invoke("plan")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == FIRST_PLAN


# --- errors ----------------------------------------------------------------------------------


def test_missing_inventory_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = invoke("plan", "-i", str(missing))
    assert_error(result, 1, f"inventory directory {missing} does not exist", "-i/--inventory")


def test_unknown_domain(repo: Path) -> None:
    result = invoke("plan", "nosuch.example", "--repo", str(repo))
    assert_error(result, 1, "no spec for nosuch.example in ")


def test_broken_spec_on_plan(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, spec=SPEC_HEAD + "  flavr: openldap\n")
    result = invoke("plan", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: 1 problem in the specs:",
        f"{spec_path(repo)}:4:3: unknown key 'flavr'; did you mean 'flavor'? (at directory/flavr)",
    ]


def test_apply_outside_a_git_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, users(3))
    plain = tmp_path / "plain"
    plain.mkdir()
    result = invoke("apply", "--repo", str(plain), "-i", str(repo / "inventories"))
    assert_error(result, 1, f"{plain} is not inside a Git repository", "--repo DIR")
    assert not (plain / "state").exists()


def test_debug_lets_the_exception_through(repo: Path) -> None:
    result = invoke("plan", "nosuch.example", "--debug", "--repo", str(repo))
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ConfigError"


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_real_process_shows_a_traceback_only_with_debug(repo: Path) -> None:
    plain = _run_module("plan", "nosuch.example", cwd=repo)
    assert plain.returncode == 1
    assert plain.stdout == ""
    assert plain.stderr.startswith("Error: no spec for nosuch.example in ")
    assert "Traceback" not in plain.stderr

    debug = _run_module("plan", "nosuch.example", "--debug", cwd=repo)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "reconciler.errors.ConfigError: no spec for nosuch.example" in debug.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["bogus"], "No such command 'bogus'", id="unknown-command"),
        pytest.param(["plan", "--nope"], "No such option: --nope", id="unknown-option"),
        pytest.param(["plan", "--format", "xml"], "'xml' is not one of", id="bad-choice"),
        pytest.param(["rollback"], "Missing argument 'DOMAIN'", id="missing-argument"),
        pytest.param(["history", "-v", "--to", "x"], "No such option: --to", id="wrong-command"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Usage: reconciler" in result.stderr
    assert message in " ".join(result.stderr.replace("│", " ").split())


def test_no_arguments_shows_the_help() -> None:
    result = invoke()
    assert result.exit_code == 2  # Click's "no_args_is_help" is a usage error
    assert "Usage: reconciler" in result.output
    for name in COMMANDS:
        assert name in result.output


# --- documentation ---------------------------------------------------------------------------

COMMANDS = [
    "validate",
    "plan",
    "apply",
    "rollback",
    "resume",
    "history",
    "show",
    "test-connection",
    "export",
    "explain",
    "auth",
    "run",
]


def test_every_command_is_documented() -> None:
    assert app.registered_commands
    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    for registered in app.registered_commands:
        callback = registered.callback
        assert callback is not None
        assert (callback.__doc__ or "").strip(), f"{callback.__name__} has no docstring"
    assert list(group.commands) == COMMANDS  # in the order the help lists them
    for name, command in group.commands.items():
        assert (command.help or "").strip(), f"`reconciler {name}` has no help text"
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"{name} {param.name}: no help"
        result = invoke(name, "--help")
        assert result.exit_code == 0, result.output
        first_line = command.help.strip().splitlines()[0]
        assert " ".join(first_line.split()[:4]) in " ".join(result.stdout.split())


def registered_commands() -> list[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    return list(group.commands)


def commands_named_in(text: str) -> set[str]:
    """The commands ``reconciler NAME`` names in ``text``."""
    return set(re.findall(r"`?reconciler ([a-z][a-z-]*)", text))


def test_every_command_is_in_the_readme_workflow() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    workflow = readme.split("## The workflow", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    listed = commands_named_in(workflow)
    missing = [name for name in registered_commands() if name not in listed]
    assert not missing, f"README.md's workflow lists no `reconciler {missing[0]} …`"
    assert listed <= set(registered_commands()), "README.md lists a command that does not exist"


# --- start-up --------------------------------------------------------------------------------

# Imported only by the commands that need them, not by the CLI's start-up nor by a plan: Git
# (a plan asks the HEAD commit through `git` itself), the login and its failure counter, the
# address validator of notifications, explain, and the unattended job and its mail.
LAZY_MODULES = [
    "git",
    "reconciler.auth",
    "email_validator",
    "reconciler.explain",
    "reconciler.runner",
    "reconciler.notify",
]
IMPORTED_AFTER = """
import json, sys
from reconciler.cli import app
before = [m for m in {lazy} if m in sys.modules]
try:
    app({args}, standalone_mode=False)
finally:
    print(json.dumps([before, [m for m in {lazy} if m in sys.modules]]), file=sys.stderr)
"""


def modules_imported(args: list[str], cwd: Path) -> tuple[list[str], list[str]]:
    """Of LAZY_MODULES, those loaded once reconciler.cli is imported, and once it has run
    ``reconciler ARGS`` too, in a fresh interpreter."""
    code = IMPORTED_AFTER.format(lazy=LAZY_MODULES, args=args)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stderr.splitlines()[-1])
    return before, after


def test_start_up_and_a_plan_import_neither_git_nor_auth(repo: Path) -> None:
    before, after = modules_imported(["plan", "--repo", str(repo)], repo)
    assert before == []
    assert after == []


def test_the_lazy_imports_are_there_for_their_commands(repo: Path) -> None:
    """The check above can fail: the commands that need these modules do import them."""
    _, after = modules_imported(["run", DOMAIN, "--repo", str(repo)], repo)
    assert {"git", "reconciler.runner", "reconciler.notify"} <= set(after)
    _, after = modules_imported(["explain", f"user01@{DOMAIN}", "--repo", str(repo)], repo)
    assert "reconciler.explain" in after


# --- streams ---------------------------------------------------------------------------------


def test_apply_reports_the_commit_on_stdout(repo: Path) -> None:
    result = invoke("apply", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    committed = f"Committed {DOMAIN} as {head(repo)[:10]}"
    # apply shows each domain's plan and its commit; no totals line across domains
    assert result.stdout.splitlines()[1:] == [*FIRST_PLAN[:-1], committed]
    assert result.stderr == ""
    assert state_path(repo).is_file()
    assert status(repo) == ""


class _Writes(io.TextIOBase):
    """A text stream that keeps what each write() call was given."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)


def test_output_is_written_in_batches_that_never_hold_the_whole_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reconciler.cli_common import write

    # Plan lines are short: many go into one write. State and export chunks are thousands
    # of lines each (about 400 kB at 4096 lines): each is written as it comes, never joined
    # with the rest of a 100k-line result.
    lines = [f"  + user{n:05d}@example.com  alias → u@example.com\n" for n in range(20_000)]
    chunks = [f"{n}".rjust(400_000, "x") for n in range(30)]
    for pieces, most in ((chunks, 400_000), (lines, 64 * 1024 + 100)):
        out = _Writes()
        monkeypatch.setattr(sys, "stdout", out)
        write(iter(pieces))
        assert "".join(out.calls) == "".join(pieces)
        assert max(len(call) for call in out.calls) <= most
        assert len(out.calls) <= 2 + len("".join(pieces)) // (64 * 1024)
