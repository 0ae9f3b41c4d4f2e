"""The plan as Markdown, for pull-request comments and GitHub's job summary (pure).

Per-domain totals in a table, then per domain its verdict and its changes in collapsible
sections, the first ``per_kind`` of each kind with a count of the rest. GitHub refuses comments
over 65,536 characters, so the rendering always fits in MARKDOWN_LIMIT: fewer changes are
listed per kind until it does, then fewer domains.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence

from reconciler.plan import ACTIONS, DomainPlan
from reconciler.render import totals_line

MARKDOWN_LIMIT = 65_000
PER_KIND = 50
MAX_LINE = 300  # characters of one change line (a big list's members can be megabytes)
MAX_TABLE_ROWS = 100
_HEADINGS = {
    "remove": "to remove",
    "deactivate": "to deactivate",
    "update": "to update",
    "add": "to add",
}
_SPECIAL = re.compile(r"([\\*_\[\]|#])")


def render_markdown(
    plans: Sequence[DomainPlan], *, per_kind: int = PER_KIND, limit: int = MARKDOWN_LIMIT
) -> str:
    """The Markdown plan, never longer than ``limit`` characters."""
    shown = per_kind
    while True:
        text = _render(plans, shown, None)
        if len(text) <= limit:
            return text
        if shown == 0:
            break
        shown //= 2
    text = _render(plans, 0, limit)  # too many domains even so: list the first ones only
    if len(text) > limit:  # only with limits too small for the totals: cut, but say so
        note = "\n… (cut to fit)\n"
        text = text[: limit - len(note)] + note if limit > len(note) else text[:limit]
    return text


def _render(plans: Sequence[DomainPlan], per_kind: int, limit: int | None) -> str:
    """The Markdown with ``per_kind`` changes of each kind; with a ``limit``, only the domains
    that fit in it."""
    head = "".join(_head(plans))
    parts = [head]
    size = len(head)
    reserve = 300  # for the line saying how many domains were left out
    for index, plan in enumerate(plans):
        section = "".join(_domain(plan, per_kind))
        if limit is not None and size + len(section) > limit - reserve:
            rest = len(plans) - index
            parts.append(
                f"\n… and {rest} more {'domain' if rest == 1 else 'domains'} not shown here: "
                "see `reconciler plan --format json`.\n"
            )
            break
        parts.append(section)
        size += len(section)
    return "".join(parts)


def _head(plans: Sequence[DomainPlan]) -> Iterator[str]:
    refused = [p for p in plans if p.refusals()]
    verdict = (
        f"⛔ apply would be **refused** for {len(refused)} of {len(plans)} domains"
        if refused
        else "✅ apply would go ahead"
    )
    yield "## Reconciler plan\n\n"
    yield f"{_escape(totals_line(plans))} {verdict}.\n\n"
    rows = [p for p in plans if p.has_changes or p.refusals() or p.skipped]
    if not rows:
        return
    yield "| domain | add | update | deactivate | remove | skipped | recipients | verdict |\n"
    yield "|---|--:|--:|--:|--:|--:|--:|---|\n"
    for plan in rows[:MAX_TABLE_ROWS]:
        counts = plan.counts()
        after = plan.existing_count + counts["add"] - counts["remove"]
        cells = [
            _escape(plan.domain),
            *(str(counts.get(action, 0)) for action in ("add", "update", "deactivate", "remove")),
            str(len(plan.skipped)),
            f"{plan.existing_count} → {after}",
            "⛔ refused" if plan.refusals() else "✅ ok",
        ]
        yield "| " + " | ".join(cells) + " |\n"
    if len(rows) > MAX_TABLE_ROWS:
        yield f"\n… and {len(rows) - MAX_TABLE_ROWS} more domains with changes.\n"
    in_sync = len(plans) - len(rows)
    if in_sync:
        yield f"\n{in_sync} {'domain is' if in_sync == 1 else 'domains are'} in sync.\n"


def _domain(plan: DomainPlan, per_kind: int) -> Iterator[str]:
    if not (plan.has_changes or plan.refusals() or plan.skipped):
        return
    yield f"\n### {_escape(plan.domain)}\n\n"
    yield f"{_escape(plan.summary())}  \n"
    yield f"Source: {_escape(plan.source)}"
    if plan.has_changes:
        yield f"  \nPlan digest: `{plan.digest()}`"
    yield "\n"
    for reason in plan.refusals():
        yield f"\n> ⛔ **Refused:** {_escape(reason)}\n"
    for note in plan.notes:
        yield f"\n> Note: {_escape(note)}\n"
    if plan.dropped:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(plan.dropped.items()))
        yield f"\nNot managed: {_escape(dropped)}\n"
    by_action: dict[str, list[str]] = {action: [] for action in ACTIONS}
    counts = plan.counts()
    for change in plan.changes:
        lines = by_action[change.action]
        if len(lines) < per_kind:
            lines.append(change.describe())
    for action in ("remove", "deactivate", "update", "add"):
        number = counts.get(action, 0)
        if number:
            yield from _details(f"{number} {_HEADINGS[action]}", by_action[action], number)
    if plan.skipped:
        lines = [item.describe() for item in plan.skipped[:per_kind]]
        yield from _details(f"{len(plan.skipped)} skipped", lines, len(plan.skipped))


def _details(title: str, lines: list[str], number: int) -> Iterator[str]:
    yield f"\n<details><summary>{title}</summary>\n\n"
    if lines:
        yield "```diff\n"
        for line in lines:
            yield (line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…") + "\n"
        yield "```\n"
    if number > len(lines):
        yield f"\n… and {number - len(lines)} more (see `reconciler plan --format json`)\n"
    yield "\n</details>\n"


def _escape(text: str) -> str:
    """Text from the directory or the spec, shown as text: no HTML, no Markdown markup."""
    return _SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
