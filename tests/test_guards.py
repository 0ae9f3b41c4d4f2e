"""The guards, the policy and the overrides: pure functions on literal plans.

Every limit is tested at its boundary: one under (N-1) and at it (N) pass, one over (N+1)
refuses with a message giving the numbers and the way forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from reconciler.guards import Overrides, count, remaining
from reconciler.plan import DomainPlan, compute_changes
from reconciler.policy import NO_DEACTIVATIONS, NO_UPDATES, PROTECTED, apply_policy
from reconciler.recipient import Recipient
from reconciler.spec import Limits, Policy
from reconciler.state import Hold

DOMAIN = "example.com"
NO_LIMITS = Limits(
    max_deletes=None,
    delete_percent=None,
    update_percent=None,
    list_member_removal_percent=None,
)


def mailbox(n: int, name: str | None = None, status: str = "active") -> Recipient:
    return Recipient("mailbox", name or f"User {n}", f"id-{n}", status)


def alias(n: int) -> Recipient:
    return Recipient("alias", target=f"u{n}@{DOMAIN}")


def people(numbers: range, *, aliases: int = 0) -> dict[str, Recipient]:
    """Mailboxes u<n>@ with ``aliases`` aliases each (a<n>.<k>@)."""
    recipients: dict[str, Recipient] = {}
    for n in numbers:
        recipients[f"u{n}@{DOMAIN}"] = mailbox(n)
        for k in range(aliases):
            recipients[f"a{n}.{k}@{DOMAIN}"] = alias(n)
    return recipients


def plan_of(
    existing: Mapping[str, Recipient],
    desired: Mapping[str, Recipient],
    limits: Limits = NO_LIMITS,
    **fields: object,
) -> DomainPlan:
    return DomainPlan(
        domain=DOMAIN,
        changes=compute_changes(existing, desired),
        existing_count=len(existing),
        desired_count=len(desired),
        source="test",
        limits=limits,
        **fields,  # type: ignore[arg-type]
    )


def guards_of(plan: DomainPlan) -> list[str]:
    return [r.guard for r in plan.verdict]


# --- counting -----------------------------------------------------------------------------------


def test_counting_is_one_per_address() -> None:
    existing = people(range(1, 4), aliases=2)  # 3 mailboxes, 6 aliases
    desired = {**people(range(1, 2), aliases=2), **people(range(4, 6), aliases=1)}
    counts = count(plan_of(existing, desired))
    # Two people left, each a mailbox and two aliases: six removals.
    assert (counts.removals, counts.mailbox_deletes, counts.alias_deletes) == (6, 2, 4)
    assert (counts.mailbox_adds, counts.alias_adds, counts.total) == (2, 2, 10)


def test_a_deactivation_counts_as_a_removal() -> None:
    plan = plan_of(people(range(1, 4)), people(range(1, 2)))
    changes, _ = apply_policy(plan.changes, Policy(removal="deactivate"), frozenset())
    deactivating = dataclasses.replace(plan, changes=changes)
    assert [c.action for c in changes] == ["deactivate", "deactivate"]
    assert count(deactivating).removals == 2
    assert deactivating.removals == 2


# --- the absolute limits at their boundaries ----------------------------------------------------


def _removing(n: int) -> DomainPlan:
    """20 people with no alias; ``n`` of them leave."""
    return plan_of(people(range(1, 21)), people(range(n + 1, 21)), NO_LIMITS)


def _adding(n: int, aliases: int = 0) -> DomainPlan:
    return plan_of({}, people(range(1, n + 1), aliases=aliases), NO_LIMITS)


@pytest.mark.parametrize(
    ("key", "make", "limit"),
    [
        ("max_deletes", _removing, 5),
        ("mailbox_deletes", _removing, 5),
        ("mailbox_adds", _adding, 5),
        ("total", _adding, 5),
    ],
)
def test_absolute_limits_at_the_boundary(key: str, make: object, limit: int) -> None:
    assert callable(make)
    for number, refused in ((limit - 1, False), (limit, False), (limit + 1, True)):
        plan = make(number)
        plan = dataclasses.replace(plan, limits=dataclasses.replace(NO_LIMITS, **{key: limit}))
        assert (key in guards_of(plan)) is refused, (key, number)


@pytest.mark.parametrize("key", ["alias_deletes", "alias_adds"])
def test_alias_limits_at_the_boundary(key: str) -> None:
    limits = dataclasses.replace(NO_LIMITS, **{key: 4})
    for number, refused in ((3, False), (4, False), (5, True)):
        with_aliases = {f"a{k}@{DOMAIN}": alias(1) for k in range(number)}
        base = people(range(1, 2))
        if key == "alias_adds":
            plan = plan_of(base, {**base, **with_aliases}, limits)
        else:
            plan = plan_of({**base, **with_aliases}, base, limits)
        assert (key in guards_of(plan)) is refused, (key, number)
        assert guards_of(plan) == ([key] if refused else [])  # nothing else counts aliases


def test_the_max_deletes_message_gives_the_numbers_and_the_way_forward() -> None:
    plan = dataclasses.replace(_removing(12), limits=Limits(max_deletes=10, delete_percent=None))
    assert plan.refusals() == [
        f"{DOMAIN}: 12 removals, over policy.limits.max_deletes 10; if that is intended: "
        f"`reconciler apply {DOMAIN} --allow-deletes 12` or `--approve {plan.digest()}`"
    ]


def test_the_default_limits() -> None:
    assert Limits() == Limits(
        mailbox_adds=None,
        mailbox_deletes=None,
        alias_adds=None,
        alias_deletes=None,
        total=None,
        max_deletes=500,
        delete_percent=30,
        update_percent=30,
        min_existing=10,
        list_member_removal_percent=30,
    )
    # 501 of 2000 leaving is 25%: only the absolute cap refuses.
    plan = plan_of(people(range(1, 2001)), people(range(502, 2001)), Limits())
    assert guards_of(plan) == ["max_deletes"]
    assert guards_of(plan_of(people(range(1, 2001)), people(range(501, 2001)), Limits())) == []


# --- the percentage limits ----------------------------------------------------------------------


def test_delete_percent_at_the_boundary() -> None:
    limits = dataclasses.replace(NO_LIMITS, delete_percent=30, min_existing=10)
    existing = people(range(1, 11))
    for leaving, refused in ((2, False), (3, False), (4, True)):
        plan = plan_of(existing, people(range(leaving + 1, 11)), limits)
        assert guards_of(plan) == (["delete_percent"] if refused else []), leaving
    plan = plan_of(existing, people(range(5, 11)), limits)
    assert plan.refusals()[0].startswith(
        f"{DOMAIN}: 4 removals (40.0% of the 10 existing recipients), over "
        "policy.limits.delete_percent 30; if that is intended: "
        f"`reconciler apply {DOMAIN} --allow-deletes 4`"
    )


def test_update_percent_at_the_boundary() -> None:
    limits = dataclasses.replace(NO_LIMITS, update_percent=30, min_existing=10)
    existing = people(range(1, 11))
    for renamed, refused in ((2, False), (3, False), (4, True)):
        desired = {
            a: (mailbox(n, "Renamed") if n <= renamed else r)
            for n, (a, r) in enumerate(existing.items(), start=1)
        }
        plan = plan_of(existing, desired, limits)
        assert guards_of(plan) == (["update_percent"] if refused else []), renamed
        if refused:
            assert plan.verdict[0].approvable and not plan.verdict[0].deletes
            assert "--allow-deletes" not in plan.refusals()[0]
            assert plan.refusals()[0].endswith(
                f"`reconciler apply {DOMAIN} --approve {plan.digest()}`"
            )


@pytest.mark.parametrize(("existing", "refused"), [(9, False), (10, True), (11, True)])
def test_percent_limits_wait_for_min_existing(existing: int, refused: bool) -> None:
    limits = dataclasses.replace(NO_LIMITS, delete_percent=30, min_existing=10)
    # Half of them leave: refused only once there are min_existing recipients.
    leaving = (existing + 1) // 2
    plan = plan_of(people(range(existing)), people(range(leaving, existing)), limits)
    assert guards_of(plan) == (["delete_percent"] if refused else [])


def test_list_member_removal_percent_at_the_boundary() -> None:
    limits = dataclasses.replace(NO_LIMITS, list_member_removal_percent=30, min_existing=10)
    members = tuple(f"u{n}@{DOMAIN}" for n in range(1, 11))
    existing = {f"sales@{DOMAIN}": Recipient("list", "Sales", members=members)}
    for lost, refused in ((2, False), (3, False), (4, True)):
        desired = {f"sales@{DOMAIN}": Recipient("list", "Sales", members=members[lost:])}
        plan = plan_of(existing, desired, limits)
        assert guards_of(plan) == (["list_member_removal_percent"] if refused else []), lost
    assert plan.refusals()[0].startswith(
        f"{DOMAIN}: list sales@{DOMAIN} loses 4 of its 10 members (40.0%), over "
        "policy.limits.list_member_removal_percent 30"
    )


def test_null_limits_never_refuse() -> None:
    assert guards_of(plan_of(people(range(1, 1001)), people(range(1000, 1001)), NO_LIMITS)) == []


# --- refusals nothing overrides -----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5000])
def test_an_empty_read_is_refused_whatever_the_size_and_the_limits(size: int) -> None:
    plan = plan_of(people(range(1, size + 1)), {}, NO_LIMITS)
    assert guards_of(plan) == ["empty_read"]
    everything = Overrides(allow_deletes=size, approve=frozenset({plan.digest()}))
    assert [r.guard for r in remaining([plan], everything)] == ["empty_read"]


@pytest.mark.parametrize(
    ("existing", "desired", "refused"), [(0, 0, False), (1, 0, True), (1, 1, False)]
)
def test_the_empty_read_rule_needs_a_non_empty_state_and_an_empty_read(
    existing: int, desired: int, refused: bool
) -> None:
    plan = plan_of(people(range(existing)), people(range(desired)), NO_LIMITS)
    assert guards_of(plan) == (["empty_read"] if refused else [])


def test_a_hold_is_not_overridden() -> None:
    plan = plan_of(people(range(1, 3)), people(range(1, 2)), hold=Hold("rolled back", "now"))
    left = remaining([plan], Overrides(allow_deletes=1, approve=frozenset({plan.digest()})))
    assert [r.guard for r in left] == ["hold"]


def test_an_unguarded_plan_has_no_verdict() -> None:
    assert plan_of(people(range(1, 3)), {}, guarded=False).verdict == ()


# --- overrides ----------------------------------------------------------------------------------


def _twelve_leaving() -> DomainPlan:
    return dataclasses.replace(
        _removing(12), limits=Limits(max_deletes=10, delete_percent=30, min_existing=10)
    )


def test_allow_deletes_passes_only_the_exact_number() -> None:
    plan = _twelve_leaving()
    assert sorted(guards_of(plan)) == ["delete_percent", "max_deletes"]
    assert remaining([plan], Overrides(allow_deletes=12)) == []
    for wrong in (11, 13):
        left = remaining([plan], Overrides(allow_deletes=wrong))
        assert sorted(r.guard for r in left) == ["delete_percent", "max_deletes", "stale_override"]
        assert left[-1].message == (
            f"--allow-deletes {wrong} matches no plan of this run (removals now: {DOMAIN} 12); "
            "the plan changed since it was reviewed: review it again"
        )


def test_allow_deletes_does_not_pass_the_other_limits() -> None:
    limits = dataclasses.replace(NO_LIMITS, max_deletes=1, total=2)
    plan = plan_of(people(range(1, 4)), people(range(2, 3)) | people(range(5, 6)), limits)
    assert sorted(guards_of(plan)) == ["max_deletes", "total"]
    assert [r.guard for r in remaining([plan], Overrides(allow_deletes=2))] == ["total"]
    assert remaining([plan], Overrides(approve=frozenset({plan.digest()}))) == []


def test_approve_passes_only_the_plan_with_that_digest() -> None:
    plan = _twelve_leaving()
    assert remaining([plan], Overrides(approve=frozenset({plan.digest()}))) == []
    # One more or one fewer leaver is another plan with another digest.
    for other in (_removing(11), _removing(13)):
        assert other.digest() != plan.digest()
        other = dataclasses.replace(other, limits=plan.limits)
        left = remaining([other], Overrides(approve=frozenset({plan.digest()})))
        assert "stale_override" in [r.guard for r in left]
        assert "max_deletes" in [r.guard for r in left]
        assert f"--approve {plan.digest()} names no plan of this run" in left[-1].message


def test_overrides_apply_to_the_plan_they_name_in_a_run_of_several() -> None:
    first = _twelve_leaving()
    second = dataclasses.replace(first, domain="example.org")
    left = remaining([first, second], Overrides(approve=frozenset({first.digest()})))
    assert {r.domain for r in left} == {"example.org"}


def test_no_override_is_needed_under_the_limits() -> None:
    assert remaining([_removing(3)], Overrides()) == []


# --- policy -------------------------------------------------------------------------------------


def _mixed() -> tuple[dict[str, Recipient], dict[str, Recipient]]:
    existing = {
        **people(range(1, 4), aliases=1),
        f"postmaster@{DOMAIN}": mailbox(99, "Postmaster"),
    }
    desired = {
        f"u1@{DOMAIN}": mailbox(1, "Renamed"),
        f"a1.0@{DOMAIN}": alias(1),
        **people(range(4, 5)),
    }
    return existing, desired


def _shaped(policy: Policy, protected: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    existing, desired = _mixed()
    changes, skipped = apply_policy(compute_changes(existing, desired), policy, protected)
    return [(c.action, c.address) for c in changes] + [
        (f"skipped: {s.reason}", s.change.address) for s in skipped
    ]


def test_the_default_policy_changes_nothing() -> None:
    existing, desired = _mixed()
    changes = compute_changes(existing, desired)
    assert apply_policy(changes, Policy(), frozenset()) == (changes, ())


def test_protected_addresses_are_never_removed() -> None:
    assert _shaped(Policy(), frozenset({f"postmaster@{DOMAIN}"})) == [
        ("remove", f"a2.0@{DOMAIN}"),
        ("remove", f"a3.0@{DOMAIN}"),
        ("remove", f"u2@{DOMAIN}"),
        ("remove", f"u3@{DOMAIN}"),
        ("update", f"u1@{DOMAIN}"),
        ("add", f"u4@{DOMAIN}"),
        (f"skipped: {PROTECTED}", f"postmaster@{DOMAIN}"),
    ]


def test_protected_addresses_are_never_deactivated() -> None:
    existing = {f"postmaster@{DOMAIN}": mailbox(1)}
    disabled = {f"postmaster@{DOMAIN}": mailbox(1, status="disabled")}
    protected = frozenset({f"postmaster@{DOMAIN}"})
    for policy in (Policy(), Policy(removal="deactivate")):
        for desired in ({}, disabled):
            changes, skipped = apply_policy(compute_changes(existing, desired), policy, protected)
            assert changes == ()
            assert [s.reason for s in skipped] == [PROTECTED]


def test_no_updates_leaves_them_out_as_skipped() -> None:
    assert _shaped(Policy(allow_updates=False)) == [
        ("remove", f"a2.0@{DOMAIN}"),
        ("remove", f"a3.0@{DOMAIN}"),
        ("remove", f"postmaster@{DOMAIN}"),
        ("remove", f"u2@{DOMAIN}"),
        ("remove", f"u3@{DOMAIN}"),
        ("add", f"u4@{DOMAIN}"),
        (f"skipped: {NO_UPDATES}", f"u1@{DOMAIN}"),
    ]


def test_no_deactivations_keeps_the_leavers_as_skipped() -> None:
    shaped = _shaped(Policy(allow_deactivations=False))
    assert [a for a in shaped if not a[0].startswith("skipped")] == [
        ("update", f"u1@{DOMAIN}"),
        ("add", f"u4@{DOMAIN}"),
    ]
    assert {a for s, a in shaped if s == f"skipped: {NO_DEACTIVATIONS}"} == {
        f"a2.0@{DOMAIN}",
        f"a3.0@{DOMAIN}",
        f"postmaster@{DOMAIN}",
        f"u2@{DOMAIN}",
        f"u3@{DOMAIN}",
    }


def test_removal_deactivate_marks_leavers_disabled() -> None:
    existing, desired = _mixed()
    changes, skipped = apply_policy(
        compute_changes(existing, desired), Policy(removal="deactivate"), frozenset()
    )
    assert skipped == ()
    leaving = [c for c in changes if c.action == "deactivate"]
    assert [c.address for c in leaving] == [
        f"a2.0@{DOMAIN}",
        f"a3.0@{DOMAIN}",
        f"postmaster@{DOMAIN}",
        f"u2@{DOMAIN}",
        f"u3@{DOMAIN}",
    ]
    assert all(c.new is not None and c.new.status == "disabled" for c in leaving)
    assert leaving[3].new == mailbox(2, status="disabled")
    assert leaving[0].describe() == f"! a2.0@{DOMAIN}  alias → u2@{DOMAIN} → disabled"
    assert leaving[0].new is not None
    assert leaving[0].new.to_json() == (
        f'{{"kind": "alias", "status": "disabled", "target": "u2@{DOMAIN}"}}'
    )


def test_a_leaver_already_disabled_is_left_as_it_is() -> None:
    existing = {f"u1@{DOMAIN}": mailbox(1, status="disabled")}
    changes, skipped = apply_policy(
        compute_changes(existing, {}), Policy(removal="deactivate"), frozenset()
    )
    assert (changes, skipped) == ((), ())


def test_a_deactivated_recipient_who_comes_back_is_reactivated() -> None:
    existing = {f"u1@{DOMAIN}": mailbox(1, status="disabled")}
    changes, _ = apply_policy(
        compute_changes(existing, {f"u1@{DOMAIN}": mailbox(1)}),
        Policy(removal="deactivate"),
        frozenset(),
    )
    assert [(c.action, c.describe()) for c in changes] == [
        ("update", f'~ u1@{DOMAIN}  status: "disabled" → "active"')
    ]


def test_the_summary_counts_deactivations() -> None:
    plan = plan_of(people(range(1, 4)), people(range(1, 2)))
    changes, _ = apply_policy(plan.changes, Policy(removal="deactivate"), frozenset())
    plan = dataclasses.replace(plan, changes=changes)
    assert plan.summary() == (
        f"{DOMAIN}: 0 to add, 0 to update, 2 to deactivate, 0 to remove (3 → 3 recipients)"
    )
    assert plan.counts() == {"add": 0, "update": 0, "deactivate": 2, "remove": 0}
