"""The one error hierarchy every layer raises; only the CLI turns it into output and exit codes.

Each error carries the context a user needs to act on it (file:line, server, DN) in its message
and, where there is one, the way forward in ``hint``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CHANGES = 3
EXIT_REFUSED = 4


class ReconcilerError(Exception):
    """Base of every error reported to a user; exit code 1 unless a subclass says otherwise."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  {self.hint}"


class ConfigError(ReconcilerError):
    """A spec, the defaults or an option is wrong: nothing was read or applied."""


class SpecErrors(ConfigError):
    """Several spec problems at once, so that `validate` can report every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in the specs:\n" + "\n".join(problems))


class FilterSyntaxError(ConfigError):
    """An LDAP search filter does not follow RFC 4515; ``position`` is the 0-based offset."""

    def __init__(self, message: str, filter_text: str, position: int) -> None:
        super().__init__(f"{message} at character {position + 1} of {filter_text!r}")
        self.reason = message
        self.filter_text = filter_text
        self.position = position


class DirectoryError(ReconcilerError):
    """The directory could not be read completely; an incomplete read is never used."""


class StateError(ReconcilerError):
    """A state file is unreadable or malformed."""


class GitError(ReconcilerError):
    """The Git repository is missing, in an unsafe condition, or a Git command failed."""


class RefusedError(ReconcilerError):
    """A safety rule refused the run (guard, hold, conflict, stale plan): nothing was applied."""

    exit_code = EXIT_REFUSED


class LoginFailed(ReconcilerError):
    """`reconciler auth` refused a login. The message is the same for every reason, so that it
    does not tell an unknown user from a wrong password; ``reason`` names the class of failure
    for the log (never the password)."""

    MESSAGE = "login failed: unknown user name or wrong password"

    def __init__(self, reason: str, message: str = MESSAGE, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.reason = reason
