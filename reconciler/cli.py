"""The command line: the only place that prints and chooses exit codes.

Results go to stdout, chatter to stderr. Every failure below is a ReconcilerError, printed as one
``Error: …`` line (plus a hint) with the exit code of DESIGN.md §5; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler import __version__
from reconciler.addresses import normalize
from reconciler.directory import Progress
from reconciler.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_REFUSED, ReconcilerError
from reconciler.export import ExportError, ExportFormat, export_chunks, load_exported_state
from reconciler.guards import Overrides
from reconciler.history import (
    HISTORY_FORMAT_VERSION,
    address_domains,
    address_history,
    parse_instant,
    snapshot,
    syncs,
    syncs_json,
)
from reconciler.inventory import check_inventory, load_specs
from reconciler.markdown import render_markdown
from reconciler.plan import summarize
from reconciler.reconcile import (
    ProgressFor,
    Workspace,
    apply_all,
    base_commit,
    plan_all,
    resume,
    rollback,
    test_connection,
    unfinished_apply,
)
from reconciler.render import iter_json, iter_text, render_domain_text
from reconciler.rules import rules_csv
from reconciler.savedplan import load_plan, write_plan
from reconciler.schedule import Shard, parse_shard
from reconciler.secrets import Secret
from reconciler.state import State, write_state

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
        except (KeyboardInterrupt, typer.Exit, typer.BadParameter):
            raise
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep Python from reporting
            # the same error again when it flushes stdout at exit.
            _silence_stdout()
            raise typer.Exit(EXIT_ERROR) from None
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


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _write(chunks: Iterable[str], per_write: int = 4096) -> None:
    """Stream a large result to stdout without building it as one string: ``per_write``
    pieces (lines of a plan) joined for each write, not a write call per line."""
    out = sys.stdout
    batch: list[str] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == per_write:
            out.write("".join(batch))
            batch.clear()
    out.write("".join(batch))
    out.flush()


def _configure_logging(options: Options) -> None:
    level = logging.WARNING if options.quiet else logging.DEBUG if options.verbose else logging.INFO
    handler = _ChatterHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


class _ProgressLine:
    """How far a directory read has got, as one line of stderr rewritten in place (``\r``).

    Only on a terminal: a log file or a pipe gets none of it. Plain text, no escape sequences
    (the line is blanked with spaces), so NO_COLOR and dumb terminals need nothing special."""

    def __init__(self) -> None:
        self._width = 0

    def for_domain(self, domain: str) -> Progress:
        def show(entries: int, pages: int) -> None:
            paged = f" ({pages} page{'' if pages == 1 else 's'})" if pages else ""
            self._show(f"{domain}: {entries} entries read{paged}")

        return show

    def _show(self, text: str) -> None:
        # Within one row: \r goes back only to the start of the row the cursor is on.
        text = text[: shutil.get_terminal_size().columns - 1]
        stream = sys.stderr  # looked up each time: the test runner swaps it
        stream.write("\r" + text.ljust(self._width))
        stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Blank the line, so what comes next starts on a clean line."""
        if self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


_PROGRESS = _ProgressLine()


class _ChatterHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log records on stderr, after blanking a progress line that is showing."""

    def emit(self, record: logging.LogRecord) -> None:
        _PROGRESS.clear()
        super().emit(record)


@contextlib.contextmanager
def _progress(options: Options) -> Iterator[ProgressFor | None]:
    """The progress line while directories are read: None (silent) unless stderr is a
    terminal and not ``-q``; blanked when the reads are over."""
    if options.quiet or not sys.stderr.isatty():
        yield None
        return
    try:
        yield _PROGRESS.for_domain
    finally:
        _PROGRESS.clear()


class PlanFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


STEP_SUMMARY_VARIABLE = "GITHUB_STEP_SUMMARY"


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
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Also save the plan (JSON) for `apply --plan FILE`.",
        ),
    ] = None,
) -> int:
    """Read the directory, map it and show what apply would change; exit 4 when apply would
    refuse. Writes no state (only FILE with --out, and the job summary on GitHub)."""
    workspace = options.workspace()
    if warning := unfinished_apply(workspace):
        log.warning("warning: %s", warning)
    with _progress(options) as progress:
        planned = plan_all(
            workspace, domains or [], fingerprints=out is not None, progress=progress
        )
    plans = [p.plan for p in planned]
    if out is not None:
        write_plan(out, plans, base_commit(workspace))
        log.info("saved the plan to %s; apply it with `reconciler apply --plan %s`", out, out)
    if output_format is PlanFormat.json:
        _write(iter_json(plans))
    elif output_format is PlanFormat.markdown:
        _write([render_markdown(plans)])
    else:
        _write(line + "\n" for line in iter_text(plans))
    summary = os.environ.get(STEP_SUMMARY_VARIABLE)
    if summary:
        _append_summary(Path(summary), render_markdown(plans))
    if any(p.refusals() for p in plans):
        return EXIT_REFUSED
    if detailed_exitcode and any(p.has_changes for p in plans):
        return EXIT_CHANGES
    return 0


def _append_summary(path: Path, markdown: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as summary:
            summary.write(markdown + "\n")
    except OSError as exc:
        log.warning("could not append the plan to %s=%s: %s", STEP_SUMMARY_VARIABLE, path, exc)


@command()
def apply(
    options: Options,
    domains: DomainsArg = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            metavar="FILE",
            help="Apply exactly this saved plan (from `plan --out`); refused if it is stale.",
        ),
    ] = None,
    branch: Annotated[
        str | None,
        typer.Option(
            "--branch",
            metavar="NAME",
            help="Commit on a new branch NAME from HEAD; the current branch is left alone.",
        ),
    ] = None,
    allow_deletes: Annotated[
        int | None,
        typer.Option(
            "--allow-deletes",
            metavar="N",
            min=0,
            help="Pass the removal limits of a plan that removes exactly N addresses.",
        ),
    ] = None,
    approve: Annotated[
        list[str] | None,
        typer.Option(
            "--approve",
            metavar="DIGEST",
            help="Pass every limit of the plan with this digest (printed by plan); repeatable.",
        ),
    ] = None,
) -> int:
    """Plan again (or take a saved plan), check the guards, then commit each changed domain's
    state (one commit per domain), all published together or none."""
    if plan_file is not None and domains:
        raise typer.BadParameter("a saved plan names its domains", param_hint="DOMAIN")
    saved = load_plan(plan_file) if plan_file is not None else None
    overrides = Overrides(allow_deletes, frozenset(d.strip().lower() for d in approve or ()))
    results = apply_all(options.workspace(), domains or [], overrides, saved=saved, branch=branch)
    for result in results:
        typer.echo("\n".join(render_domain_text(result.plan)))
        if result.commit:
            where = f" on branch {branch}" if branch else ""
            typer.echo(f"Committed {result.plan.domain} as {result.commit[:10]}{where}")
    if branch and not any(result.commit for result in results):
        log.info("nothing to commit: branch %s was not created", branch)
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


class DataFormat(StrEnum):
    text = "text"
    json = "json"


FormatOption = Annotated[DataFormat, typer.Option("--format", help="Output format.")]


@command("history")
def history_command(
    options: Options,
    domains: DomainsArg = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            metavar="ADDR",
            help="When this address appeared, changed (which field, old → new) and disappeared "
            "[searched in: the DOMAINs, else its own domain's state, else every state].",
        ),
    ] = None,
    output_format: FormatOption = DataFormat.text,
) -> int:
    """One line per commit that changed a domain's state (newest first): date, commit, domain,
    action, counts, and the revision a rollback restored. With --address: that address's
    story, oldest first."""
    workspace = options.workspace()
    if address is not None:
        return _address_history(workspace, address, domains or [], output_format)
    entries = syncs(workspace, domains or [])
    if output_format is DataFormat.json:
        _write([syncs_json(entries)])
    else:
        _write(entry.describe() + "\n" for entry in entries)
    return 0


def _address_history(
    workspace: Workspace, address: str, domains: list[str], output_format: DataFormat
) -> int:
    stored = normalize(address)
    if stored is None:
        raise typer.BadParameter(f"{address!r} is not a mail address", param_hint="--address")
    searched = address_domains(workspace, stored, domains)
    events = address_history(workspace, stored, searched)
    if output_format is DataFormat.json:
        document = {
            "format_version": HISTORY_FORMAT_VERSION,
            "address": stored,
            "domains": searched,
            "events": [event.to_dict() for event in events],
        }
        _write([json.dumps(document, ensure_ascii=False, indent=1) + "\n"])
    else:
        _write(event.describe() + "\n" for event in events)
    if not events:
        where = ", ".join(searched) or "any domain (there is no state file)"
        log.info("%s is in no committed state of %s", stored, where)
    return 0


@command("show")
def show_command(
    options: Options,
    domain: DomainArg,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="REV|DATE",
            help="A revision, or an ISO date or date and time (UTC unless it has an offset; a "
            "date alone is the end of that day): the last change of the state at or before it "
            "[default: the last committed].",
        ),
    ] = None,
    output_format: FormatOption = DataFormat.text,
) -> int:
    """The recipients of a domain as committed at a revision or as of a date, with the commit
    and its date: what a filter or archive had to go by at the time."""
    if at is not None:
        try:
            parse_instant(at)
        except ValueError as exc:
            raise typer.BadParameter(
                f"{at!r} is not an ISO date or date and time ({exc}); e.g. 2026-03-01, "
                "2026-03-01T12:00:00Z or a revision",
                param_hint="--at",
            ) from None
    shown = snapshot(options.workspace(), domain, at)
    if output_format is DataFormat.json:
        _write(shown.json_chunks())
    else:
        _write(line + "\n" for line in shown.lines())
    return 0


@command("test-connection")
def test_connection_command(options: Options, domain: DomainArg) -> int:
    """Read the domain's directory once: server, TLS, bind, base DN, counts, first recipients."""
    with _progress(options) as progress:
        watch = progress(domain) if progress is not None else None
        report = test_connection(options.workspace(), domain, progress=watch)
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


@command("export")
def export_command(
    options: Options,
    domain: DomainArg,
    output_format: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            help="The committed state for a mail filter: a Postfix lookup table (address OK), "
            "CSV or JSON.",
        ),
    ] = None,
    rules: Annotated[
        bool,
        typer.Option(
            "--rules",
            help="The domain's effective mapping rules (its own, then the default rules) as CSV.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            metavar="FILE",
            help="Write FILE atomically (readers see the old file or the new one, never half) "
            "[default: stdout].",
        ),
    ] = None,
    include_disabled: Annotated[
        bool,
        typer.Option("--include-disabled", help="Also recipients whose status is not active."),
    ] = False,
) -> int:
    """Export a domain for other tools: its committed state (--format) or its effective mapping
    rules (--rules). A domain on hold exports too: its state is what is committed."""
    if rules == (output_format is not None):
        raise typer.BadParameter(
            "say what to export, one of: --format postfix|csv|json (the committed state) or "
            "--rules (the domain's effective mapping rules)",
            param_hint="--format / --rules",
        )
    workspace = options.workspace()
    if output_format is None:
        if include_disabled:
            raise typer.BadParameter("goes with --format", param_hint="--include-disabled")
        (spec,) = load_specs(workspace.inventory_dir, [domain])
        chunks: Iterable[str] = [rules_csv(spec.rules)]
    else:
        chunks = export_chunks(
            _committed_state(workspace, domain), output_format, include_disabled=include_disabled
        )
    if out is None:
        _write(list(chunks))  # all made first: a failed export leaves no half of it on stdout
        return 0
    try:
        write_state(out, chunks)
    except OSError as exc:
        raise ExportError(
            f"cannot write {out}: {exc.strerror or exc}", f"{out} was left as it was"
        ) from None
    log.info("exported %s to %s", domain, out)
    return 0


def _committed_state(workspace: Workspace, domain: str) -> State:
    state = load_exported_state(
        workspace.state_file(domain), domain, workspace.inventory_dir / f"{domain}.yaml"
    )
    if state.hold is not None:
        log.info(
            "note: %s is on hold (%s); exporting its committed state", domain, state.hold.reason
        )
    return state


@command("explain")
def explain_command(
    options: Options,
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The mail address.")],
) -> int:
    """Which entry, attribute or rule and group produce an address, or why it is not one."""
    from reconciler.explain import describe, explain

    for index, explanation in enumerate(explain(options.workspace(), address)):
        if index:
            typer.echo("")
        typer.echo("\n".join(describe(explanation)))
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
    from reconciler.auth import authenticate  # (and its failure counter): only for this command

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


def _shard(value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@command("run")
def run_command(
    options: Options,
    domains: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="DOMAIN",
            help="Sync these domains now [default: every domain whose schedule is due].",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", metavar="N", min=1, help="Read N domains' directories at a time."
        ),
    ] = 1,
    shard: Annotated[
        Shard | None,
        typer.Option(
            "--shard",
            metavar="I/N",
            parser=_shard,
            help="Only the I-th of N stable shares of the domains (by a hash of the name).",
        ),
    ] = None,
) -> int:
    """The automated job: plan and apply each due domain under every guard, committing each
    domain on its own, then notify. Exit 1 if a domain failed, else 4 if one was refused."""
    from reconciler.runner import run, summary_table

    result = run(options.workspace(), domains or [], jobs=jobs, shard=shard)
    for domain, due in result.not_due:
        log.debug("%s: not due until %s", domain, due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if result.not_due or result.unscheduled:
        log.info(
            "skipped %d domains not due yet, %d without a schedule (name them to run them now)",
            len(result.not_due),
            len(result.unscheduled),
        )
    for done in result.domains:
        for reason in done.reasons:  # the table shows the first line of the first one
            log.info("%s: %s", done.domain, reason)
    if result.domains:
        typer.echo("\n".join(summary_table(result)))
    else:
        log.info("no domain to run")
    return result.exit_code


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
