"""Renderings of plans: text for terminals and commit messages, JSON for machines.

The plan never prints itself; each format is a function of the same DomainPlan objects.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from reconciler import __version__
from reconciler.plan import DomainPlan

PLAN_FORMAT_VERSION = 1


def iter_domain_text(plan: DomainPlan, *, max_changes: int | None = None) -> Iterator[str]:
    """The lines describing one domain's plan; ``max_changes`` caps the listed changes."""
    yield f"{plan.domain}  ({plan.source})"
    shown = plan.changes if max_changes is None else plan.changes[:max_changes]
    for change in shown:
        yield f"  {change.describe()}"
    if len(shown) < len(plan.changes):
        yield f"  … and {len(plan.changes) - len(shown)} more changes"
    skipped = plan.skipped if max_changes is None else plan.skipped[:max_changes]
    for item in skipped:
        yield f"  {item.describe()}"
    if len(skipped) < len(plan.skipped):
        yield f"  … and {len(plan.skipped) - len(skipped)} more skipped"
    if plan.dropped:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(plan.dropped.items()))
        yield f"  not managed: {dropped}"
    for note in plan.notes:
        yield f"  note: {note}"
    for reason in plan.refusals():
        yield f"  REFUSED: {reason}"
    yield plan.summary()


def render_domain_text(plan: DomainPlan, *, max_changes: int | None = None) -> list[str]:
    return list(iter_domain_text(plan, max_changes=max_changes))


def chunked(lines: Iterable[str], lines_per_chunk: int = 4096) -> Iterator[str]:
    """``lines`` in pieces of whole lines, each line ended: what is written out (a first
    plan's 100k lines are never one string, nor are they written one by one)."""
    lines = iter(lines)
    while chunk := list(itertools.islice(lines, lines_per_chunk)):
        yield "\n".join(chunk) + "\n"


def iter_text(plans: Sequence[DomainPlan]) -> Iterator[str]:
    """The text plan, line by line (a 100k-change plan is never one string in memory)."""
    for index, plan in enumerate(plans):
        if index:
            yield ""
        yield from iter_domain_text(plan)
    yield totals_line(plans)


def render_text(plans: Sequence[DomainPlan]) -> str:
    return "".join(chunked(iter_text(plans)))


def totals_line(plans: Sequence[DomainPlan]) -> str:
    totals = totals_of(plans)
    changed = sum(1 for p in plans if p.has_changes)
    noun = "domain" if len(plans) == 1 else "domains"
    if not changed:
        return f"Plan: no changes in {len(plans)} {noun}."
    deactivate = f"{totals['deactivate']} to deactivate, " if "deactivate" in totals else ""
    return (
        f"Plan: {totals['add']} to add, {totals['update']} to update, {deactivate}"
        f"{totals['remove']} to remove in {changed} of {len(plans)} {noun}."
    )


def totals_of(plans: Sequence[DomainPlan]) -> dict[str, int]:
    """Changes per action over all ``plans`` ("deactivate" only when there are some)."""
    totals = dict.fromkeys(("add", "update", "remove"), 0)
    for plan in plans:
        for action, count in plan.counts().items():
            totals[action] = totals.get(action, 0) + count
    return totals


def plan_to_dict(plan: DomainPlan, *, with_changes: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "domain": plan.domain,
        "source": plan.source,
        "summary": plan.summary(),
        "digest": plan.digest(),
        "existing_count": plan.existing_count,
        "counts": plan.counts(),
        "dropped": dict(sorted(plan.dropped.items())),
        "conflicts": [
            {"address": c.address, "dns": list(c.dns), "reason": c.reason} for c in plan.conflicts
        ],
        "hold": plan.hold.to_dict() if plan.hold else None,
        "notes": list(plan.notes),
        "refusals": plan.refusals(),
        "skipped": [item.to_dict() for item in plan.skipped],
    }
    if plan.fingerprints:
        data["fingerprints"] = dict(plan.fingerprints)
    if with_changes:
        data["changes"] = [change.to_dict() for change in plan.changes]
    return data


def iter_json(
    plans: Sequence[DomainPlan], *, base_commit: str | None = None, saved: bool = False
) -> Iterator[str]:
    """The versioned JSON plan (schemas/plan.schema.json) in pieces, one change per line.
    ``saved``: a plan for `apply --plan`, with the commit it was made at (``base_commit``).

    Written piecewise because json.dumps with indentation is pure Python and builds the whole
    document: for 100k changes that took seconds and hundreds of MiB.
    """
    head: dict[str, Any] = {
        "format_version": PLAN_FORMAT_VERSION,
        "generator": f"reconciler {__version__}",
        "totals": totals_of(plans),
    }
    if saved:
        head["base_commit"] = base_commit
    yield _dumps(head)[:-1] + ', "domains": ['
    for index, plan in enumerate(plans):
        yield ("," if index else "") + "\n  " + _dumps(plan_to_dict(plan, with_changes=False))[:-1]
        yield ', "changes": ['
        for number, change in enumerate(plan.changes):
            yield ("," if number else "") + "\n    " + _dumps(change.to_dict())
        yield "\n  ]}" if plan.changes else "]}"
    yield "\n]}\n"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def render_json(plans: Sequence[DomainPlan]) -> str:
    return "".join(iter_json(plans))


def commit_message(
    plan: DomainPlan,
    action: str,
    subject: str | None = None,
    trailers: dict[str, str] | None = None,
) -> str:
    """Subject (the plan summary by default), the plan (capped), and trailers `history` reads."""
    body = "\n".join(render_domain_text(plan, max_changes=1000)[:-1])
    counts = plan.counts()
    all_trailers = {
        "Reconciler-Domain": plan.domain,
        "Reconciler-Action": action,
        "Reconciler-Counts": " ".join(f"{k}={v}" for k, v in counts.items()),
        "Reconciler-Plan-Digest": plan.digest(),
        **(trailers or {}),
    }
    trailer_text = "\n".join(f"{k}: {v}" for k, v in all_trailers.items())
    return f"{subject or plan.summary()}\n\n{body}\n\n{trailer_text}\n"
