"""The command line: the only place that prints and chooses exit codes.

Results go to stdout, chatter to stderr (DESIGN.md §5). This module is the Typer app: it puts
the commands of cli_sync.py, cli_state.py and cli_directory.py on it, in the order the help
lists them; what every command shares is in cli_common.py.
"""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from reconciler import COMPILED, __version__, cli_directory, cli_state, cli_sync
from reconciler.cli_common import Command

app = typer.Typer(
    name="reconciler",
    help="Sync mail recipients from LDAP / Active Directory / LDIF into Git, the GitOps way.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: "[default: …]" is text, not a markup tag
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The order of `reconciler --help`: the sync workflow and its way back, looking back, the
# directory and exports, then the unattended job. Listed here rather than registered as each
# module is imported, so that the order does not follow how the modules are grouped.
COMMANDS: tuple[Command, ...] = (
    cli_sync.validate,
    cli_sync.plan,
    cli_sync.apply,
    cli_state.rollback_command,
    cli_state.resume_command,
    cli_state.history_command,
    cli_state.show_command,
    cli_directory.test_connection_command,
    cli_state.export_command,
    cli_directory.explain_command,
    cli_directory.auth_command,
    cli_sync.run_command,
)
for _command in COMMANDS:
    app.command(_command.name)(_command.callback)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reconciler {__version__} ({COMPILED})")
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
    try:
        app()
    finally:
        # What the command made (a first plan's hundreds of thousands of changes) is still
        # referenced from the exiting frames: frozen, the collection at interpreter exit
        # does not walk it all (0.5 s at 100k users) before it is freed anyway.
        gc.freeze()
