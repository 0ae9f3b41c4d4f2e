"""Mapping rules (SpamExperts style): ``regex`` on a value of ``attribute``, ``format`` makes the
address from its groups: ``{}`` for the groups in order, ``{N}`` for group N (1-based) and
``{name}`` for a named group; ``{{`` and ``}}`` are literal braces.

Rules are checked when the spec is loaded (:func:`rule_problems`) and compiled once per plan
(:func:`compile_rule`), so mapping an entry costs one regex search per value.
"""

from __future__ import annotations

import csv
import io
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reconciler.directory import Entry
from reconciler.spec import Rule

# A part of a compiled format: literal text, then the group to insert after it (or None).
_Part = tuple[str, int | str | None]


class RuleFormatError(ValueError):
    """A format that does not fit its regex; the message says which field and why."""


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    number: int  # 1-based position among the effective rules, for `explain`
    attribute: str  # lower case, as entries hold it
    pattern: re.Pattern[str]
    parts: tuple[_Part, ...]

    def describe(self) -> str:
        r = self.rule
        return f"{r.origin} rule {self.number} ({r.type} {r.attribute} {r.regex!r} → {r.format!r})"

    def addresses(self, entry: Entry) -> Iterator[str]:
        """The formatted address of every value of the attribute that the regex matches."""
        for value in entry.attributes.get(self.attribute, ()):
            if type(value) is not str:
                continue
            match = self.pattern.search(value)
            if match is not None:
                yield "".join(
                    text + (match.group(g) or "" if g is not None else "") for text, g in self.parts
                )


def compile_rule(rule: Rule, number: int) -> CompiledRule:
    """The rule ready to apply; raises re.error or RuleFormatError when it is not valid."""
    pattern = re.compile(rule.regex)
    return CompiledRule(
        rule, number, rule.attribute.lower(), pattern, _compile_format(rule.format, pattern)
    )


def compile_rules(rules: Iterable[Rule]) -> tuple[CompiledRule, ...]:
    return tuple(compile_rule(rule, number) for number, rule in enumerate(rules, 1))


def _compile_format(text: str, pattern: re.Pattern[str]) -> tuple[_Part, ...]:
    if pattern.groups == 0:
        raise RuleFormatError("the regex has no group for the format to use; e.g. ^(.*)$")
    parts: list[_Part] = []
    sequential = 0
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:  # a single { or }
        raise RuleFormatError(f"format {text!r}: {exc} (write {{{{ or }}}} for a brace)") from None
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None))
            continue
        if spec or conversion:
            raise RuleFormatError(f"format {text!r}: {{{field}}} may not have ':' or '!' parts")
        group: int | str
        if field == "":
            sequential += 1
            group = sequential
        elif field.isdigit():
            group = int(field)
            if group == 0:
                raise RuleFormatError(f"format {text!r}: groups are numbered from 1, not {{0}}")
        elif field in pattern.groupindex:
            group = field
        else:
            names = ", ".join(pattern.groupindex) or "none"
            raise RuleFormatError(
                f"format {text!r}: {{{field}}} is not a named group of the regex (named: {names})"
            )
        if isinstance(group, int) and group > pattern.groups:
            raise RuleFormatError(
                f"format {text!r} uses group {group}, but the regex has only {pattern.groups}"
            )
        parts.append((literal, group))
    if all(g is None for _, g in parts):
        raise RuleFormatError(f"format {text!r} uses no group of the regex: write {{}} or {{1}}")
    return tuple(parts)


def rule_problems(rule: Rule) -> list[tuple[str, str]]:
    """(key, message) for what is wrong with a rule: its regex or its format."""
    try:
        pattern = re.compile(rule.regex)
    except re.error as exc:
        return [("regex", f"invalid regular expression {rule.regex!r}: {exc}")]
    try:
        _compile_format(rule.format, pattern)
    except RuleFormatError as exc:
        return [("format", str(exc))]
    return []


RULES_CSV_HEADER = ("order", "origin", "type", "attribute", "regex", "format")


def rules_csv(rules: Iterable[Rule]) -> str:
    """The effective rules as CSV (RFC 4180, with a header), in the order they apply."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RULES_CSV_HEADER)
    for number, r in enumerate(rules, 1):
        writer.writerow((number, r.origin, r.type, r.attribute, r.regex, r.format))
    return out.getvalue()
