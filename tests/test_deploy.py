"""The deployment examples in deploy/ parse, have the keys their platform needs, and every
`reconciler …` command in them parses with the real command line, so they cannot drift."""

from __future__ import annotations

import configparser
import contextlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from ruamel.yaml import YAML

from reconciler.cli import app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SERVICE = DEPLOY / "systemd" / "reconciler.service"
TIMER = DEPLOY / "systemd" / "reconciler.timer"
CRON = DEPLOY / "cron" / "reconciler.cron"
CRONJOB = DEPLOY / "kubernetes" / "cronjob.yaml"
PLAN_WORKFLOW = DEPLOY / "github" / "plan.yml"
RUN_WORKFLOW = DEPLOY / "github" / "run.yml"


# --- checking reconciler commands against the real CLI --------------------------------------------


class NoSuchCommand(Exception):
    exit_code = 2


def parse_command(args: list[str]) -> typer.Context:
    """Parse ``reconciler ARGS`` (without running it) as the CLI would; raises Click's usage
    error (exit_code 2: a bad option or value) like the real command line."""
    group = typer.main.get_command(app)
    name, rest = args[0], args[1:]
    command = group.get_command(typer.Context(group), name)  # type: ignore[attr-defined]
    if command is None:
        raise NoSuchCommand(name)
    context: typer.Context = command.make_context(name, rest)
    return context


@contextlib.contextmanager
def usage_error() -> Iterator[None]:
    with pytest.raises(Exception) as caught:  # Click's exceptions: vendored by Typer
        yield
    assert getattr(caught.value, "exit_code", None) == 2, caught.value


def reconciler_commands(shell: str) -> Iterator[list[str]]:
    """The arguments of every `reconciler …` in a piece of shell (redirections left out)."""
    for line in shell.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part, comments=True)
            if words and Path(words[0]).name == "reconciler":
                yield list(until_redirection(words[1:]))


def until_redirection(words: list[str]) -> Iterator[str]:
    for word in words:
        if word[:1] in "<>" or word[:2] in ("2>", "1>"):
            return
        yield word


def test_the_command_check_can_fail() -> None:
    assert parse_command(["run", "--jobs", "4"]).params["jobs"] == 4
    with usage_error():
        parse_command(["run", "--shard", "5/4"])
    with usage_error():
        parse_command(["run", "--jbos", "4"])
    with usage_error():
        parse_command(["sync"])
    assert list(reconciler_commands("a && reconciler plan --out x > y; b")) == [
        ["plan", "--out", "x"]
    ]


# --- systemd --------------------------------------------------------------------------------------


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_the_systemd_units_have_what_they_need() -> None:
    service, timer = unit(SERVICE), unit(TIMER)
    assert service.sections() == ["Unit", "Service"]
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].startswith("/usr/local/bin/reconciler run")
    assert "EnvironmentFile" in service["Service"]
    assert timer.sections() == ["Unit", "Timer", "Install"]
    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert re.fullmatch(r"\*:0/15", timer["Timer"]["OnCalendar"])
    [args] = reconciler_commands(service["Service"]["ExecStart"])
    parse_command(args)


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        # Without it the INI test above is the check; the machine this suite is made on has it.
        pytest.fail("systemd-analyze is not installed (apt-get install systemd)")
    reconciler, git = str(Path(sys.executable).with_name("reconciler")), shutil.which("git")
    assert Path(reconciler).is_file() and git, "the console script beside python, and git"
    # The units name the install paths; verify checks that they are executables here.
    text = SERVICE.read_text(encoding="utf-8")
    text = text.replace("/usr/local/bin/reconciler", reconciler).replace("/usr/bin/git", git)
    (tmp_path / SERVICE.name).write_text(text, encoding="utf-8")
    shutil.copy(TIMER, tmp_path / TIMER.name)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "unknown keys are only warnings: none are allowed"


# --- cron -----------------------------------------------------------------------------------------

_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_field_ok(field: str, low: int, high: int) -> bool:
    """One of the five time fields: * or N or N-M, optionally /STEP, comma-separated."""
    for item in field.split(","):
        match = re.fullmatch(r"(\*|([0-9]+)(?:-([0-9]+))?)(?:/([1-9][0-9]*))?", item)
        if match is None:
            return False
        start, end = match[2], match[3]
        numbers = [int(n) for n in (start, end) if n is not None]
        if any(not low <= n <= high for n in numbers) or (end and int(end) < int(start)):
            return False
    return True


def cron_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]


def test_the_cron_parser_can_fail() -> None:
    assert cron_field_ok("*/15", 0, 59)
    assert cron_field_ok("1,5-9/2", 0, 59)
    assert not cron_field_ok("60", 0, 59)
    assert not cron_field_ok("*/0", 0, 59)
    assert not cron_field_ok("9-5", 0, 23)
    assert not cron_field_ok("mon", 0, 7)


def test_the_cron_line() -> None:
    [line] = cron_lines(CRON.read_text(encoding="utf-8"))
    fields = line.split(None, 6)
    assert len(fields) == 7, "five time fields, the user (cron.d format), the command"
    for field, (low, high) in zip(fields[:5], _RANGES, strict=True):
        assert cron_field_ok(field, low, high), field
    assert fields[5] == "reconciler"
    [args] = reconciler_commands(fields[6])
    assert parse_command(args).info_name == "run"


# --- Kubernetes -----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def test_the_kubernetes_cronjob() -> None:
    job = load_yaml(CRONJOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "CronJob")
    spec = job["spec"]
    minute, *rest = spec["schedule"].split()
    assert len(rest) == 4 and cron_field_ok(minute, 0, 59)
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    secret = env["EXAMPLE_LDAP_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "reconciler", "key": "EXAMPLE_LDAP_PASSWORD"}
    assert "value" not in env["EXAMPLE_LDAP_PASSWORD"], "passwords come from the Secret"
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["volumes"]}
    assert container["command"] == ["/bin/sh", "-c"]
    [args] = reconciler_commands(container["args"][0])
    assert parse_command(args).params["jobs"] == 4


# --- GitHub Actions -------------------------------------------------------------------------------


def workflow_commands(workflow: Any) -> Iterator[list[str]]:
    """Every reconciler command of every step, once per matrix value of a `shard` matrix."""
    for job in workflow["jobs"].values():
        shards = job.get("strategy", {}).get("matrix", {}).get("shard", [None])
        for step in job["steps"]:
            for shard in shards:
                script = step.get("run", "")
                if shard is not None:
                    script = script.replace("${{ matrix.shard }}", str(shard))
                for args in reconciler_commands(script):
                    assert not any("${{" in a for a in args), f"unexpanded expression in {args}"
                    yield args


def test_the_plan_workflow() -> None:
    workflow = load_yaml(PLAN_WORKFLOW)
    assert set(workflow["on"]) == {"pull_request"}
    assert workflow["permissions"]["pull-requests"] == "write"
    commands = list(workflow_commands(workflow))
    assert [c[0] for c in commands] == ["validate", "plan"]
    plan = parse_command(commands[1])
    assert plan.params["output_format"] == "markdown"  # (a StrEnum member or its text)
    assert plan.params["detailed_exitcode"] is True
    steps = workflow["jobs"]["plan"]["steps"]
    assert any("gh pr comment" in step.get("run", "") for step in steps)


def test_the_scheduled_run_workflow() -> None:
    workflow = load_yaml(RUN_WORKFLOW)
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    [schedule] = workflow["on"]["schedule"]
    assert len(schedule["cron"].split()) == 5
    for field, (low, high) in zip(schedule["cron"].split(), _RANGES, strict=True):
        assert cron_field_ok(field, low, high)
    job = workflow["jobs"]["run"]
    shards = job["strategy"]["matrix"]["shard"]
    commands = list(workflow_commands(workflow))
    assert len(commands) == len(shards)
    parsed = [parse_command(args) for args in commands]
    assert all(c.info_name == "run" for c in parsed)
    assert [str(c.params["shard"]) for c in parsed] == [f"{s}/{len(shards)}" for s in shards]
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert "git switch -c" in scripts and "gh pr create" in scripts
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0, "the schedules need the sync commits"
