"""The spec's ``policy`` and ``protected`` applied to the raw changes of a diff (pure).

What a policy forbids is not refused: it is left out of the plan and listed as skipped, so the
rest of the sync still happens (SpamExperts' "allow updates" / "allow deactivations").
``removal: deactivate`` turns each removal into a deactivation: the leaver stays, with
``status: disabled``.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.plan import Change, Skipped
from reconciler.spec import Policy

PROTECTED = "protected"
NO_UPDATES = "policy.allow_updates is false"
NO_DEACTIVATIONS = "policy.allow_deactivations is false"
DISABLED = "disabled"


def apply_policy(
    changes: Sequence[Change], policy: Policy, protected: frozenset[str]
) -> tuple[tuple[Change, ...], tuple[Skipped, ...]]:
    """The changes a sync under ``policy`` makes, and the ones it leaves out (with why).

    Order is kept: removals (or deactivations) first, then updates, then additions.
    """
    default = Policy()
    if (
        not protected
        and policy.allow_updates
        and policy.allow_deactivations
        and policy.removal == default.removal
    ):
        return tuple(changes), ()  # the usual case: nothing to look at per change
    kept: list[Change] = []
    skipped: list[Skipped] = []
    for change in changes:
        if change.action == "add":
            kept.append(change)
            continue
        if change.action == "remove":
            reason = _why_kept(change, policy, protected)
            if reason:
                skipped.append(Skipped(change, reason))
            elif policy.removal == "deactivate":
                old = change.old
                assert old is not None
                if old.status != DISABLED:  # a leaver already disabled stays as it is
                    disabled = old._replace(status=DISABLED)
                    kept.append(Change("deactivate", change.address, old, disabled))
            else:
                kept.append(change)
            continue
        # An update; one that disables an address is a deactivation too.
        deactivates = (
            change.new is not None
            and change.new.status == DISABLED
            and (change.old is None or change.old.status != DISABLED)
        )
        if deactivates and (reason := _why_kept(change, policy, protected)):
            skipped.append(Skipped(change, reason))
        elif not policy.allow_updates:
            skipped.append(Skipped(change, NO_UPDATES))
        else:
            kept.append(change)
    return tuple(kept), tuple(skipped)


def _why_kept(change: Change, policy: Policy, protected: frozenset[str]) -> str | None:
    """Why an address that would stop receiving mail is kept, or None when it may go."""
    if change.address in protected:
        return PROTECTED
    if not policy.allow_deactivations:
        return NO_DEACTIVATIONS
    return None
