"""The commands that sync: validate, plan, apply, and run (the unattended job)."""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli_common import DomainsArg, Options, command, write
from reconciler.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_REFUSED
from reconciler.guards import Overrides
from reconciler.inventory import check_inventory
from reconciler.markdown import render_markdown
from reconciler.reconcile import apply_all, base_commit, plan_all, unfinished_apply
from reconciler.render import chunked, iter_domain_text, iter_json, iter_text
from reconciler.savedplan import load_plan, write_plan
from reconciler.schedule import Shard, parse_shard

log = logging.getLogger("reconciler")


class PlanFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


STEP_SUMMARY_VARIABLE = "GITHUB_STEP_SUMMARY"


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
    with options.progress() as progress:
        planned = plan_all(
            workspace, domains or [], fingerprints=out is not None, progress=progress
        )
    plans = [p.plan for p in planned]
    if out is not None:
        write_plan(out, plans, base_commit(workspace))
        log.info("saved the plan to %s; apply it with `reconciler apply --plan %s`", out, out)
    if output_format is PlanFormat.json:
        write(iter_json(plans))
    elif output_format is PlanFormat.markdown:
        write([render_markdown(plans)])
    else:
        write(chunked(iter_text(plans)))
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
    with options.progress() as progress:
        results = apply_all(
            options.workspace(),
            domains or [],
            overrides,
            saved=saved,
            branch=branch,
            progress=progress,
        )
    for result in results:
        write(chunked(iter_domain_text(result.plan)))
        if result.commit:
            where = f" on branch {branch}" if branch else ""
            typer.echo(f"Committed {result.plan.domain} as {result.commit[:10]}{where}")
    if branch and not any(result.commit for result in results):
        log.info("nothing to commit: branch %s was not created", branch)
    return 0


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

    with options.progress() as progress:
        result = run(options.workspace(), domains or [], jobs=jobs, shard=shard, progress=progress)
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
