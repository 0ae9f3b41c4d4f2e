"""The commands about committed states: rollback and resume (which commit), history and show
(which look back), export (which hands a state or a spec's rules to other tools)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.addresses import normalize
from reconciler.cli_common import DomainArg, DomainsArg, Options, command, write
from reconciler.export import ExportError, ExportFormat, export_chunks, load_exported_state
from reconciler.history import (
    HISTORY_FORMAT_VERSION,
    address_domains,
    address_history,
    parse_instant,
    snapshot,
    syncs,
    syncs_json,
)
from reconciler.inventory import load_specs
from reconciler.reconcile import Workspace, resume, rollback
from reconciler.render import render_domain_text
from reconciler.rules import rules_csv
from reconciler.state import State, write_state

log = logging.getLogger("reconciler")


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
        write([syncs_json(entries)])
    else:
        write(entry.describe() + "\n" for entry in entries)
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
        write([json.dumps(document, ensure_ascii=False, indent=1) + "\n"])
    else:
        write(event.describe() + "\n" for event in events)
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
        write(shown.json_chunks())
    else:
        write(line + "\n" for line in shown.lines())
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
        write(list(chunks))  # all made first: a failed export leaves no half of it on stdout
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
