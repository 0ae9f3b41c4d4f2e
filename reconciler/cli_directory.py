"""The commands that ask a domain's directory: test-connection, explain, auth."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from reconciler.cli_common import DomainArg, Options, command
from reconciler.plan import summarize
from reconciler.printable import shown
from reconciler.reconcile import test_connection, watching
from reconciler.secrets import Secret


@command("test-connection")
def test_connection_command(options: Options, domain: DomainArg) -> int:
    """Read the domain's directory once: server, TLS, bind, base DN, counts, first recipients."""
    with options.progress() as progress, watching(progress, domain) as watch:
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
        typer.echo(f"  {shown(address)}  {summarize(recipient)}")
    return 0


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
