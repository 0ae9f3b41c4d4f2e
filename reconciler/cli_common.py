"""What every command shares: the common options (DESIGN.md §5), the ``command()`` decorator
that adds them and turns errors into exit codes, and the writing of results to stdout.

The commands live in cli_sync.py, cli_state.py and cli_directory.py; cli.py puts them on the
Typer app. Every failure is a ReconcilerError, printed as one ``Error: …`` line (plus a hint)
with the exit code of DESIGN.md §5; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler.cli_progress import configure_logging, progress_line
from reconciler.errors import EXIT_ERROR, ReconcilerError
from reconciler.reconcile import ProgressFor, Workspace


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

    def progress(self) -> contextlib.AbstractContextManager[ProgressFor | None]:
        """The progress line of directory reads (None: silent, with ``-q`` or off a terminal)."""
        return progress_line(quiet=self.quiet)


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


@dataclass(frozen=True)
class Command:
    """A command for the Typer app: its name (None: the function's) and the callback Typer
    calls, which takes the command's own parameters and the common options."""

    name: str | None
    callback: Callable[..., None]


def command(name: str | None = None) -> Callable[[Callable[..., int]], Command]:
    """Make ``func(options, …)`` a command taking the common options too, and turn its errors
    and return value into the exit code. cli.py registers it."""
    return functools.partial(_command, name=name)


def _command(func: Callable[..., int], name: str | None) -> Command:
    own = [
        p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "options"
    ]

    @functools.wraps(func)
    def run(**kwargs: Any) -> None:
        options = Options(**{name: kwargs.pop(name) for name in _COMMON_NAMES})
        configure_logging(quiet=options.quiet, verbose=options.verbose)
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
    return Command(name, run)


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def write(chunks: Iterable[str], per_write: int = 64 * 1024) -> None:
    """Stream a large result to stdout without building it as one string: short pieces
    (lines of a plan) joined up to ``per_write`` characters for each write, not a write call
    per line; big ones (thousands of state lines) written as they come."""
    out = sys.stdout
    batch: list[str] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= per_write:
            out.write("".join(batch))
            batch.clear()
            size = 0
    out.write("".join(batch))
    out.flush()


DomainsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="DOMAIN",
        help="Domains to act on [default: every domain in the inventory].",
        show_default=False,
    ),
]
DomainArg = Annotated[str, typer.Argument(metavar="DOMAIN", help="The domain.")]
