"""Secrets named in specs: ``{env: VAR}`` or ``{file: PATH}``, never the secret itself.

A :class:`Secret` hides its value from ``str``, ``repr`` and formatting, so it cannot slip into
a message, a log line, a plan or a traceback's locals by accident; only :meth:`reveal` gives
it out, at the one place that hands it to a library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError


class Secret:
    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        self._value = value
        self.origin = origin  # "environment variable X" / "file Y": safe to show

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.origin})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def resolve_secret(reference: Mapping[str, str], base_dir: Path, where: str) -> Secret:
    """Read the secret a spec points at. ``where`` names the spec key for error messages."""
    if "env" in reference:
        name = reference["env"]
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(
                f"{where}: environment variable {name} is not set",
                f"export {name}=… before running reconciler",
            )
        return Secret(value, f"environment variable {name}")
    path = base_dir / reference["file"]
    try:
        # One trailing newline is what editors and `echo > file` add; it is not part of it.
        value = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the secret file {path}: {exc.strerror}") from None
    return Secret(value, f"file {path}")
