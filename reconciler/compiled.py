"""Whether the compiled modules run: the hot modules an install compiled with mypyc (see
hatch_build.py) are used only while every one of their sources is the file it was compiled
from; otherwise, or with RECONCILER_COMPILED=0, all of them run as Python.

All or none: a compiled module calls the others it was compiled with directly, so one edited
source loaded as Python beside compiled callers would not be the code that runs.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
DIGESTS = PACKAGE / "_compiled.json"  # written by the build: module name -> source SHA-256


class SourceFirst:
    """A meta path finder that loads the named modules from their Python source."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name not in self.names:
            return None
        source = source_of(name)
        loader = importlib.machinery.SourceFileLoader(name, str(source))
        return importlib.util.spec_from_file_location(name, source, loader=loader)


def source_of(name: str) -> Path:
    """The source file of one of the package's modules (``reconciler.mapping``)."""
    return PACKAGE / (name.rpartition(".")[2] + ".py")


def compiled_modules() -> frozenset[str]:
    """The modules this install compiled: those with an extension module beside their source."""
    names = (f"{__package__}.{path.name.partition('.')[0]}" for path in PACKAGE.glob("*.so"))
    return frozenset(name for name in names if source_of(name).is_file())


def stale(names: frozenset[str]) -> list[str]:
    """The compiled modules whose source is not the one compiled (all when the record of
    what was compiled cannot be read)."""
    try:
        digests = json.loads(DIGESTS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return sorted(names)
    if not isinstance(digests, dict):
        return sorted(names)
    found = []
    for name in sorted(names):
        try:
            current: str | None = hashlib.sha256(source_of(name).read_bytes()).hexdigest()
        except OSError:
            current = None
        if current != digests.get(name):
            found.append(name)
    return found


def choose() -> str:
    """Put the compiled modules in use, or their sources; says which (for --version)."""
    names = compiled_modules()
    if not names:
        return "pure Python"
    if os.environ.get("RECONCILER_COMPILED", "1").strip() == "0":
        reason = "RECONCILER_COMPILED=0"
    elif changed := stale(names):
        reason = f"changed since the install compiled them: {', '.join(changed)}"
    else:
        return f"compiled with mypyc ({len(names)} modules)"
    if not any(isinstance(finder, SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst(names))
    return f"pure Python ({reason})"


MODE = choose()
