"""`reconciler explain ADDRESS`: where an address comes from (entry DN, attribute or rule,
group membership), or why an address of the directory is not a recipient."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.addresses import normalize
from reconciler.directory import normalize_dn
from reconciler.inventory import load_specs
from reconciler.mapping import Conflict, TraceEvent
from reconciler.printable import shown
from reconciler.recipient import Recipient
from reconciler.reconcile import Workspace, read_directory
from reconciler.spec import DomainSpec
from reconciler.state import load_state


@dataclass(frozen=True)
class Explanation:
    """What one domain's spec and directory make of one address."""

    domain: str
    address: str
    managed: bool  # whether the address is in one of the domain's mail domains
    existing: Recipient | None  # in the state now
    desired: Recipient | None  # what the directory gives now
    events: tuple[TraceEvent, ...]
    admitted: tuple[tuple[str, str], ...]  # (DN, through which groups) with only_members_of
    conflicts: tuple[Conflict, ...]
    in_lists: tuple[str, ...]  # list addresses with this address among their members


def explain(workspace: Workspace, address: str) -> list[Explanation]:
    """Read the directory of every domain that manages ``address`` (every domain when none
    does: an entry may still carry it) and trace it through the mapping."""
    wanted = normalize(address) or address.strip().lower()
    specs = load_specs(workspace.inventory_dir)
    domain = wanted.rpartition("@")[2]
    managing = [s for s in specs if domain in s.managed_domains]
    return [_explain(workspace, spec, wanted) for spec in managing or specs]


def _explain(workspace: Workspace, spec: DomainSpec, address: str) -> Explanation:
    _, result = read_directory(spec, trace=address)
    events = tuple(e for e in result.trace or () if e.address == address)
    existing = load_state(workspace.state_file(spec.domain), spec.domain).recipients
    admitted: list[tuple[str, str]] = []
    if result.admitted_by is not None:
        for dn in dict.fromkeys(e.dn for e in events):
            via = result.admitted_by.get(normalize_dn(dn))
            if via is not None:
                admitted.append((dn, via))
    return Explanation(
        domain=spec.domain,
        address=address,
        managed=address.rpartition("@")[2] in spec.managed_domains,
        existing=existing.get(address),
        desired=result.recipients.get(address),
        events=events,
        admitted=tuple(admitted),
        conflicts=tuple(
            c
            for c in result.conflict_list()
            if c.address == address or any(e.dn in c.dns for e in events)
        ),
        in_lists=tuple(
            sorted(
                a
                for a, r in result.recipients.items()
                if r.kind == "list" and address in (r.members or ())
            )
        ),
    )


def describe(explanation: Explanation) -> list[str]:
    """The explanation as lines for a terminal."""
    from reconciler.plan import summarize  # the plan's one-line form of a recipient

    e = explanation
    lines = [f"{shown(e.address)} in {e.domain}:"]
    lines.append(f"  state: {summarize(e.existing)}" if e.existing else "  state: not a recipient")
    if e.desired is not None:
        lines.append(f"  directory now: {summarize(e.desired)}")
    elif not e.managed:
        lines.append(
            f"  directory now: not a recipient: foreign domain (not {e.domain} or "
            "one of its domain_aliases)"
        )
    else:
        lines.append("  directory now: not a recipient")
    for event in e.events:
        origin = f" ({event.origin})" if event.origin else ""
        lines.append(f"  from {shown(event.dn)}{origin}: {event.outcome}")
    if not e.events:
        lines.append("  no directory entry the spec reads has this address")
    for dn, via in e.admitted:
        lines.append(f"  {shown(dn)} is admitted by only_members_of: member of {shown(via)}")
    for conflict in e.conflicts:
        lines.append(f"  conflict: {conflict.describe()}")
    for list_address in e.in_lists:
        lines.append(f"  member of list {shown(list_address)}")
    return lines
