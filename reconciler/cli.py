"""The command line: the only place that prints and chooses exit codes.

Results go to stdout, chatter to stderr. Every failure below is a ReconcilerError, printed as one
``Error: …`` line (plus a hint) with the exit code of DESIGN.md §5; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler import __version__
from reconciler.auth import authenticate
from reconciler.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_REFUSED, ReconcilerError
from reconciler.inventory import check_inventory
from reconciler.plan import summarize
from reconciler.reconcile import (
    Workspace,
    apply_all,
    history,
    plan_all,
    resume,
    rollback,
    test_connection,
)
from reconciler.render import iter_json, iter_text, render_domain_text
from reconciler.secrets import Secret

log = logging.getLogger("reconciler")

app = typer.Typer(
    name="reconciler",
    help="Sync mail recipients from LDAP / Active Directory / LDIF into Git, the GitOps way.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: "[default: …]" is text, not a markup tag
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(frozen=True)
class Options:
    """The options every command takes (DESIGN.md §5, "Common options")."""

    inventory: Path | None
    state_dir: Path | None
    repo: Path | None
    verbose: int
    quiet: bool
    debug: bool

    def workspace(self) -> Workspace:
        """Paths given on the command line are relative to the current directory; the defaults
        are relative to the repository root, so the tool works from any subdirectory."""
        root = self.repo or _repository_root(Path.cwd())
        return Workspace(
            inventory_dir=self.inventory or root / "inventories",
            state_dir=self.state_dir or root / "state",
            repo_dir=root,
        )


def _repository_root(start: Path) -> Path:
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return start


_COMMON_PARAMETERS = [
    inspect.Parameter(
        "inventory",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "-i",
                "--inventory",
                envvar="RECONCILER_INVENTORY",
                metavar="DIR",
                help="Directory of domain specs [default: inventories/ at the repository root].",
            ),
        ],
    ),
    inspect.Parameter(
        "state_dir",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--state-dir",
                envvar="RECONCILER_STATE_DIR",
                metavar="DIR",
                help="Directory of state files [default: state/ at the repository root].",
            ),
        ],
    ),
    inspect.Parameter(
        "repo",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--repo",
                envvar="RECONCILER_REPO",
                metavar="DIR",
                help="The Git repository [default: the one around the current directory].",
            ),
        ],
    ),
    inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=0,
        annotation=Annotated[
            int, typer.Option("-v", "--verbose", count=True, help="More detail on stderr.")
        ],
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("-q", "--quiet", help="Only results and errors.")],
    ),
    inspect.Parameter(
        "debug",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")],
    ),
]
_COMMON_NAMES = [p.name for p in _COMMON_PARAMETERS]


def command(name: str | None = None) -> Callable[[Callable[..., int]], Callable[..., None]]:
    """Register ``func(options, …)`` as a command taking the common options too, and turn its
    errors and return value into the exit code."""
    return functools.partial(_register, name=name)


def _register(func: Callable[..., int], name: str | None) -> Callable[..., None]:
    own = [
        p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "options"
    ]

    @functools.wraps(func)
    def run(**kwargs: Any) -> None:
        options = Options(**{name: kwargs.pop(name) for name in _COMMON_NAMES})
        _configure_logging(options)
        try:
            code = func(options, **kwargs)
        except ReconcilerError as exc:
            if options.debug:
                raise
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, typer.Exit):
            raise
        except Exception as exc:
            if options.debug:
                raise
            typer.echo(
                f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for "
                "the traceback, and please report it)",
                err=True,
            )
            raise typer.Exit(EXIT_ERROR) from None
        if code:
            raise typer.Exit(code)

    parameters = own + _COMMON_PARAMETERS
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    app.command(name)(run)
    return run


def _write(chunks: Iterable[str]) -> None:
    """Stream a large result to stdout without building it as one string."""
    out = sys.stdout
    for chunk in chunks:
        out.write(chunk)
    out.flush()


def _configure_logging(options: Options) -> None:
    level = logging.WARNING if options.quiet else logging.DEBUG if options.verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


class PlanFormat(StrEnum):
    text = "text"
    json = "json"


DomainsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="DOMAIN",
        help="Domains to act on [default: every domain in the inventory].",
        show_default=False,
    ),
]
DomainArg = Annotated[str, typer.Argument(metavar="DOMAIN", help="The domain.")]


@command()
def validate(options: Options) -> int:
    """Check every spec: schema and semantics (filters parse, names are valid, files exist)."""
    specs, problems = check_inventory(options.workspace().inventory_dir)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        typer.echo(f"Error: {len(problems)} {noun} found", err=True)
        return EXIT_ERROR
    log.info("%d domain spec%s valid", len(specs), "" if len(specs) == 1 else "s")
    return 0


@command()
def plan(
    options: Options,
    domains: DomainsArg = None,
    output_format: Annotated[
        PlanFormat, typer.Option("--format", help="Output format.")
    ] = PlanFormat.text,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 3 when there are changes (0 when in sync)."),
    ] = False,
) -> int:
    """Read the directory, map it and show what apply would change. Never writes."""
    plans = [p.plan for p in plan_all(options.workspace(), domains or [])]
    if output_format is PlanFormat.json:
        _write(iter_json(plans))
    else:
        _write(line + "\n" for line in iter_text(plans))
    if any(p.refusals() for p in plans):
        return EXIT_REFUSED
    if detailed_exitcode and any(p.has_changes for p in plans):
        return EXIT_CHANGES
    return 0


@command()
def apply(options: Options, domains: DomainsArg = None) -> int:
    """Plan again, then write each changed domain's state and commit it (one commit per domain)."""
    for result in apply_all(options.workspace(), domains or []):
        typer.echo("\n".join(render_domain_text(result.plan)))
        if result.commit:
            typer.echo(f"Committed {result.plan.domain} as {result.commit[:10]}")
    return 0


@command("rollback")
def rollback_command(
    options: Options,
    domain: DomainArg,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="REV",
            help="Restore the state as of this revision [default: before the domain's last sync].",
        ),
    ] = None,
) -> int:
    """Restore an earlier state as a new commit and put the domain on hold."""
    result = rollback(options.workspace(), domain, to)
    typer.echo("\n".join(render_domain_text(result.plan)))
    typer.echo(
        f"Committed the rollback of {domain} as {(result.commit or '')[:10]}; "
        f"{domain} is on hold until `reconciler resume {domain}`"
    )
    return 0


@command("resume")
def resume_command(options: Options, domain: DomainArg) -> int:
    """Lift the hold a rollback put on a domain, so syncs apply again."""
    result = resume(options.workspace(), domain)
    if result.commit is None:
        log.info("%s is not on hold; nothing to do", domain)
    else:
        typer.echo(f"Resumed {domain} (commit {result.commit[:10]})")
    return 0


@command("history")
def history_command(options: Options, domains: DomainsArg = None) -> int:
    """One line per commit that changed a domain's state: date, commit, action, counts."""
    for domain, commit in history(options.workspace(), domains or []):
        action = commit.trailers.get("Reconciler-Action", "manual")
        counts = commit.trailers.get("Reconciler-Counts", "")
        typer.echo(f"{commit.date}  {commit.short}  {domain}  {action:<8}  {counts}".rstrip())
    return 0


@command("test-connection")
def test_connection_command(options: Options, domain: DomainArg) -> int:
    """Read the domain's directory once: server, TLS, bind, base DN, counts, first recipients."""
    report = test_connection(options.workspace(), domain)
    facts = {
        **report.facts,
        "entries": f"{report.entries} matching the users filter",
        "recipients": f"{report.recipients}" + (" (the first ones:)" if report.first else ""),
    }
    width = max(len(k) for k in facts) + 1
    for key, value in facts.items():
        typer.echo(f"{key + ':':<{width}} {value}")
    for address, recipient in report.first:
        typer.echo(f"  {address}  {summarize(recipient)}")
    return 0


@command("auth")
def auth_command(
    options: Options,
    domain: DomainArg,
    username: Annotated[
        str,
        typer.Argument(
            metavar="USERNAME",
            help="The user name as the user typed it (a UPN or DOMAIN\\user on AD).",
        ),
    ],
) -> int:
    """Check a user's password against the domain's directory (read from stdin when it is not a
    terminal, else prompted without echo). Prints the user's address; exit 1 when refused."""
    login = authenticate(options.workspace(), domain, username, _read_password())
    typer.echo(login.address or login.dn)
    return 0


def _read_password() -> Secret:
    """The first line of stdin (its line break removed, nothing else), or a hidden prompt."""
    if sys.stdin.isatty():
        typed = typer.prompt("Password", hide_input=True, err=True)
        return Secret(typed, "the prompt")
    line = sys.stdin.readline()
    return Secret(line.removesuffix("\n").removesuffix("\r"), "standard input")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reconciler {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Sync mail recipients from LDAP / Active Directory / LDIF into Git, the GitOps way."""


def main() -> None:
    app()
