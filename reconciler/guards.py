"""The safety guards: whether `apply` may act on a plan, and the overrides that name a plan.

Pure functions over plans. Every refusal says what it counted, the limit it is over and the way
forward, e.g. "example.com: 12 removals, over policy.limits.max_deletes 10; if that is intended:
`reconciler apply example.com --allow-deletes 12` or `--approve 3f2a…`". Counting is one per
address: a mailbox and its two aliases removed are three removals.

Some refusals no override can pass: conflicts in the directory data, a held domain and an empty
read over a non-empty state. The limits of ``policy.limits`` are passed by an override naming the
exact plan: ``--approve DIGEST`` (its digest, printed by `plan`) passes every limit of that plan,
``--allow-deletes N`` the removal limits of a plan that removes exactly N addresses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.plan import DomainPlan

# What each kind of refusal is called (the limits keep the names of their spec keys).
CONFLICT = "conflict"
EMPTY_READ = "empty_read"
HOLD = "hold"
STALE_OVERRIDE = "stale_override"


@dataclass(frozen=True)
class Refusal:
    """One reason `apply` must not act on a plan."""

    domain: str
    guard: str
    message: str
    approvable: bool = False  # passed by --approve with the plan's digest
    deletes: bool = False  # passed by --allow-deletes with the plan's number of removals


@dataclass(frozen=True)
class Overrides:
    """What the operator said on the command line to pass the limits of a reviewed plan."""

    allow_deletes: int | None = None
    approve: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Counts:
    """A plan counted the way the limits are written: one per address."""

    mailbox_adds: int = 0
    mailbox_deletes: int = 0
    alias_adds: int = 0
    alias_deletes: int = 0
    updates: int = 0
    removals: int = 0
    total: int = 0
    # (list address, members it loses, members it had) for every list that loses some.
    list_losses: tuple[tuple[str, int, int], ...] = ()


def count(plan: DomainPlan) -> Counts:
    """Count the changes of ``plan`` per kind of recipient and action."""
    adds = {"mailbox": 0, "alias": 0}
    deletes = {"mailbox": 0, "alias": 0}
    updates = removals = 0
    losses = []
    for change in plan.changes:
        action = change.action
        if action == "add":
            assert change.new is not None
            kind = change.new.kind
            if kind in adds:
                adds[kind] += 1
        elif action == "update":
            updates += 1
            old, new = change.old, change.new
            assert old is not None and new is not None
            if old.kind == "list" and new.kind == "list" and old.members:
                lost = len(set(old.members) - set(new.members or ()))
                if lost:
                    losses.append((change.address, lost, len(set(old.members))))
        else:  # remove or deactivate: the address stops receiving mail either way
            removals += 1
            assert change.old is not None
            kind = change.old.kind
            if kind in deletes:
                deletes[kind] += 1
    return Counts(
        mailbox_adds=adds["mailbox"],
        mailbox_deletes=deletes["mailbox"],
        alias_adds=adds["alias"],
        alias_deletes=deletes["alias"],
        updates=updates,
        removals=removals,
        total=len(plan.changes),
        list_losses=tuple(losses),
    )


def refusals(plan: DomainPlan) -> list[Refusal]:
    """Every reason `apply` must not act on ``plan``, before any override."""
    return [*_blocking(plan), *_limits(plan)]


def _blocking(plan: DomainPlan) -> Iterator[Refusal]:
    """The refusals no override passes: the data or the domain must be fixed first."""
    for conflict in plan.conflicts:
        yield Refusal(plan.domain, CONFLICT, f"conflict: {conflict.describe()}")
    if plan.desired_count == 0 and plan.existing_count > 0:
        # An empty read is far more often a broken filter or export than everyone leaving.
        yield Refusal(
            plan.domain,
            EMPTY_READ,
            f"the directory gave no recipients while the state has {plan.existing_count}; "
            "check the source and the users filter",
        )
    if plan.hold is not None:
        yield Refusal(
            plan.domain,
            HOLD,
            f"{plan.domain} is on hold since {plan.hold.since}: {plan.hold.reason}; "
            f"lift it with `reconciler resume {plan.domain}`",
        )


def _limits(plan: DomainPlan) -> Iterator[Refusal]:
    limits, counts, domain = plan.limits, count(plan), plan.domain
    existing = plan.existing_count

    def way_out(deletes: bool) -> str:
        # Only for a refusal: the digest serialises every change of the plan.
        approve = f"--approve {plan.digest()}`"
        if deletes:
            return f"`reconciler apply {domain} --allow-deletes {counts.removals}` or `{approve}"
        return f"`reconciler apply {domain} {approve}"

    def over(key: str, number: int, what: str, deletes: bool) -> Refusal:
        way = way_out(deletes)
        return Refusal(
            domain,
            key,
            f"{domain}: {number} {what}, over policy.limits.{key} {getattr(limits, key)}; "
            f"if that is intended: {way}",
            approvable=True,
            deletes=deletes,
        )

    for key, number, what, deletes in (
        ("max_deletes", counts.removals, "removals", True),
        ("mailbox_deletes", counts.mailbox_deletes, "mailbox removals", True),
        ("alias_deletes", counts.alias_deletes, "alias removals", True),
        ("mailbox_adds", counts.mailbox_adds, "mailbox additions", False),
        ("alias_adds", counts.alias_adds, "alias additions", False),
        ("total", counts.total, "changes", False),
    ):
        limit = getattr(limits, key)
        if limit is not None and number > limit:
            yield over(key, number, what, deletes)

    if existing >= limits.min_existing and existing:
        for key, number, what, deletes in (
            ("delete_percent", counts.removals, "removals", True),
            ("update_percent", counts.updates, "updates", False),
        ):
            limit = getattr(limits, key)
            if limit is not None and number * 100 > limit * existing:
                share = f"{_percent(number, existing)} of the {existing} existing recipients"
                yield over(key, number, f"{what} ({share})", deletes)

    limit = limits.list_member_removal_percent
    if limit is not None:
        for address, lost, members in counts.list_losses:
            if members >= limits.min_existing and lost * 100 > limit * members:
                yield Refusal(
                    domain,
                    "list_member_removal_percent",
                    f"{domain}: list {address} loses {lost} of its {members} members "
                    f"({_percent(lost, members)}), over "
                    f"policy.limits.list_member_removal_percent {limit}; "
                    f"if that is intended: {way_out(False)}",
                    approvable=True,
                )


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%"


def remaining(plans: Sequence[DomainPlan], overrides: Overrides) -> list[Refusal]:
    """The refusals of a run once ``overrides`` are taken into account.

    An override must name a plan of the run: an ``--approve`` digest that is no plan's, or an
    ``--allow-deletes`` number that is no plan's number of removals, refuses the run, since what
    was reviewed is not what would be applied.
    """
    left: list[Refusal] = []
    for plan in plans:
        approved = plan.digest() in overrides.approve
        deletes_named = overrides.allow_deletes == plan.removals
        left += [
            r
            for r in plan.verdict
            if not ((r.approvable and approved) or (r.deletes and deletes_named))
        ]
    digests = {plan.digest() for plan in plans}
    for digest in sorted(overrides.approve - digests):
        now = ", ".join(f"{p.domain} {p.digest()}" for p in plans if p.has_changes) or "none"
        left.append(
            Refusal(
                "",
                STALE_OVERRIDE,
                f"--approve {digest} names no plan of this run (plan digests now: {now}); "
                "the plan changed since it was approved: review it again",
            )
        )
    wanted = overrides.allow_deletes
    if wanted is not None and not any(plan.removals == wanted for plan in plans):
        now = ", ".join(f"{p.domain} {p.removals}" for p in plans) or "no domain"
        left.append(
            Refusal(
                "",
                STALE_OVERRIDE,
                f"--allow-deletes {wanted} matches no plan of this run (removals now: {now}); "
                "the plan changed since it was reviewed: review it again",
            )
        )
    return left
