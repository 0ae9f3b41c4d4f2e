"""YAML input for hand-written files (specs), keeping where every value came from.

ruamel.yaml lives here only. Specs are loaded with the round-trip loader because it records the
line and column of every key and item, so an error can point at ``file:line:col``. State files
do not come through here: they have their own fast line-based reader in ``state.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.errors import ConfigError

JsonPath = Sequence[str | int]


@dataclass(frozen=True)
class Position:
    """A place in a file, 1-based like editors and compilers print it."""

    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class YamlDocument:
    """A loaded YAML file: plain Python data plus the node tree that knows positions."""

    file: Path
    data: Any
    _tree: Any

    def locate(self, path: JsonPath, *, key: bool = False) -> Position | None:
        """Where the value at ``path`` is written (or its key, with ``key=True``).

        Returns None when the path does not exist in this file (it may come from another
        layer, such as the defaults).
        """
        node = self._tree
        line, column = 0, 0
        for depth, step in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, CommentedMap) and isinstance(step, str) and step in node:
                line, column = node.lc.key(step) if (key and last) else node.lc.value(step)
                node = node[step]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
                line, column = node.lc.item(step)
                node = node[step]
            else:
                return None
        if not path:
            return Position(self.file, 1, 1)
        return Position(self.file, line + 1, column + 1)

    def locate_mapping(self, path: JsonPath) -> Position | None:
        """Where the mapping at ``path`` starts (for "missing key" errors)."""
        node = self._tree
        for step in path:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                return None
        if isinstance(node, CommentedMap | CommentedSeq) and path:
            return Position(self.file, node.lc.line + 1, node.lc.col + 1)
        return self.locate(path)


def load_yaml(file: Path) -> YamlDocument:
    """Load one YAML file; syntax errors and duplicate keys become a ConfigError with file:line."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: {problem}", "fix the YAML syntax") from None
    except YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    return YamlDocument(file, _plain(tree), tree)


def _plain(node: Any) -> Any:
    """Round-trip nodes to plain dicts, lists and scalars (what jsonschema and dataclasses want)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)  # drop ruamel's scalar-string subclasses
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node
