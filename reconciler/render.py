"""Renderings of plans: text for terminals and commit messages, JSON for machines.

The plan never prints itself; each format is a function of the same DomainPlan objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reconciler import __version__
from reconciler.plan import DomainPlan

PLAN_FORMAT_VERSION = 1


def render_domain_text(plan: DomainPlan, *, max_changes: int | None = None) -> list[str]:
    """The lines describing one domain's plan; ``max_changes`` caps the listed changes."""
    lines = [f"{plan.domain}  ({plan.source})"]
    shown = plan.changes if max_changes is None else plan.changes[:max_changes]
    lines += [f"  {change.describe()}" for change in shown]
    if len(shown) < len(plan.changes):
        lines.append(f"  … and {len(plan.changes) - len(shown)} more changes")
    if plan.dropped:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(plan.dropped.items()))
        lines.append(f"  not managed: {dropped}")
    lines += [f"  note: {note}" for note in plan.notes]
    lines += [f"  REFUSED: {reason}" for reason in plan.refusals()]
    lines.append(plan.summary())
    return lines


def render_text(plans: Sequence[DomainPlan]) -> str:
    blocks = ["\n".join(render_domain_text(plan)) for plan in plans]
    return "\n\n".join(blocks) + "\n" + _totals_line(plans) + "\n"


def _totals_line(plans: Sequence[DomainPlan]) -> str:
    totals = _totals(plans)
    changed = sum(1 for p in plans if p.has_changes)
    noun = "domain" if len(plans) == 1 else "domains"
    if not changed:
        return f"Plan: no changes in {len(plans)} {noun}."
    return (
        f"Plan: {totals['add']} to add, {totals['update']} to update, "
        f"{totals['remove']} to remove in {changed} of {len(plans)} {noun}."
    )


def _totals(plans: Sequence[DomainPlan]) -> dict[str, int]:
    totals = dict.fromkeys(("add", "update", "remove"), 0)
    for plan in plans:
        for action, count in plan.counts().items():
            totals[action] += count
    return totals


def plan_to_dict(plan: DomainPlan) -> dict[str, Any]:
    return {
        "domain": plan.domain,
        "source": plan.source,
        "summary": plan.summary(),
        "digest": plan.digest(),
        "existing_count": plan.existing_count,
        "counts": plan.counts(),
        "changes": [change.to_dict() for change in plan.changes],
        "dropped": dict(sorted(plan.dropped.items())),
        "conflicts": [{"address": c.address, "dns": list(c.dns)} for c in plan.conflicts],
        "hold": plan.hold.to_dict() if plan.hold else None,
        "notes": list(plan.notes),
        "refusals": plan.refusals(),
    }


def render_json(plans: Sequence[DomainPlan]) -> str:
    """The versioned JSON plan (schemas/plan.schema.json)."""
    document = {
        "format_version": PLAN_FORMAT_VERSION,
        "generator": f"reconciler {__version__}",
        "totals": _totals(plans),
        "domains": [plan_to_dict(plan) for plan in plans],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


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
        "Reconciler-Counts": f"add={counts['add']} update={counts['update']} "
        f"remove={counts['remove']}",
        "Reconciler-Plan-Digest": plan.digest(),
        **(trailers or {}),
    }
    trailer_text = "\n".join(f"{k}: {v}" for k, v in all_trailers.items())
    return f"{subject or plan.summary()}\n\n{body}\n\n{trailer_text}\n"
