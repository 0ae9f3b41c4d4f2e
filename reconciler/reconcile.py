"""The workflows behind the commands: plan, apply, rollback, resume, history.

This is the edge where the pure middle (mapping, diff, plan) meets files, the directory and
Git. Nothing is written until every domain of a run has been planned and checked.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.directory import DirectorySource, ReadInterrupted, open_source
from reconciler.errors import ConfigError, GitError, RefusedError
from reconciler.gitstore import Commit, GitStore
from reconciler.groups import members_of, read_groups
from reconciler.inventory import load_specs
from reconciler.lists import list_filter, map_lists, read_lists
from reconciler.mapping import MappingResult, finish, map_entries
from reconciler.plan import DomainPlan, apply_changes, compute_changes
from reconciler.recipient import Recipient
from reconciler.renames import find_renames, fold_renames, with_recipient_defaults
from reconciler.render import commit_message
from reconciler.spec import DomainSpec
from reconciler.state import (
    Hold,
    State,
    dump_state,
    load_state,
    parse_state,
    state_path,
    write_state,
)

log = logging.getLogger("reconciler")


@dataclass(frozen=True)
class Workspace:
    """Where the inventory and the state are, and the repository around them."""

    inventory_dir: Path
    state_dir: Path
    repo_dir: Path

    def store(self) -> GitStore:
        return GitStore.discover(self.repo_dir)

    def state_file(self, domain: str) -> Path:
        return state_path(self.state_dir, domain)

    def spec_label(self, domain: str) -> str:
        return f"{self.inventory_dir.name}/{domain}.yaml"


@dataclass(frozen=True)
class Planned:
    spec: DomainSpec
    state: State
    plan: DomainPlan


@dataclass(frozen=True)
class Applied:
    plan: DomainPlan
    commit: str | None  # None when there was nothing to apply


def read_directory(
    spec: DomainSpec, *, trace: str | None = None
) -> tuple[DirectorySource, MappingResult]:
    """Read and map the whole directory of ``spec``; only a complete read returns.
    ``trace`` (an address) records what became of it (for `explain`)."""
    source = open_source(spec)
    while True:
        try:
            return source, map_directory(source, spec, trace=trace)
        except ReadInterrupted as exc:
            # The mapping of a half-read directory is thrown away; the read starts over.
            log.warning("%s; reading again from the start on the next server", exc.message)
            # (the source raises ReadInterrupted only while it has a server left to try)


def map_directory(source: DirectorySource, spec: DomainSpec, *, trace: str | None) -> MappingResult:
    """Groups and lists first (few entries, kept), then the users streamed, then the lists'
    members from the users' addresses."""
    groups = read_groups(source, spec.groups) if spec.groups is not None else None
    members = (
        members_of(groups, spec.groups.only_members_of)
        if groups is not None and spec.groups is not None and spec.groups.only_members_of
        else None
    )
    lists = read_lists(source, spec, groups) if spec.distribution_lists is not None else None
    result = map_entries(
        source.entries(),
        spec,
        members=members,
        keep_primaries=lists is not None,
        trace=trace,
        lists=list_filter(spec),
    )
    if lists is not None:
        result.entries_read += len(lists)
        map_lists(lists, spec, result)
    result.admitted_by = members
    return finish(result)


def plan_domain(spec: DomainSpec, state: State) -> DomainPlan:
    """Read the directory, map it and diff it against ``state``."""
    source, result = read_directory(spec)
    notes = []
    if result.entries_without_id and spec.users.id_attribute:
        notes.append(
            f"{result.entries_without_id} entries have no {spec.users.id_attribute}; "
            "their DN is used as id"
        )
    notes += invalid_notes(result)
    existing = state.recipients
    renames = find_renames(existing, result.recipients)
    desired = with_recipient_defaults(result.recipients, existing, renames, spec.recipient_defaults)
    return DomainPlan(
        domain=spec.domain,
        changes=fold_renames(compute_changes(existing, desired), renames, existing),
        existing_count=len(existing),
        desired_count=len(desired),
        source=f"{source.describe()}: {result.entries_read} matching entries",
        dropped=dict(result.dropped),
        conflicts=result.conflict_list(),
        hold=state.hold,
        notes=tuple(notes),
    )


MAX_INVALID_NOTES = 50


def invalid_notes(result: MappingResult) -> list[str]:
    """One note per skipped value (entry DN, attribute, value, why), capped for huge messes."""
    notes = [f"skipped: {v.describe()}" for v in result.invalid[:MAX_INVALID_NOTES]]
    if len(result.invalid) > MAX_INVALID_NOTES:
        notes.append(f"… and {len(result.invalid) - MAX_INVALID_NOTES} more invalid values")
    return notes


def plan_all(workspace: Workspace, domains: Sequence[str]) -> list[Planned]:
    """Plan every named domain (all when none are named). Writes nothing."""
    planned = []
    for spec in load_specs(workspace.inventory_dir, domains):
        with _bulk_objects():
            state = load_state(workspace.state_file(spec.domain), spec.domain)
            planned.append(Planned(spec, state, plan_domain(spec, state)))
    return planned


@contextlib.contextmanager
def _bulk_objects() -> Iterator[None]:
    """Pause the cyclic garbage collector while a domain's recipients are built.

    Hundreds of thousands of long-lived, acyclic objects (entries, recipients, changes) make
    every collection rescan them all; that cost a quarter of a 100k-user plan. Reference
    counting still frees everything; the collector runs again right after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def apply_all(workspace: Workspace, domains: Sequence[str]) -> list[Applied]:
    """Plan, check every domain, then write and commit each changed one.

    All-or-nothing across the run's checks: if any domain is refused, no domain is written.
    Each domain's own write is all-or-nothing too (a failed commit restores its file).
    """
    with workspace.store() as store, store.lock():
        store.preflight([workspace.state_dir, workspace.inventory_dir])
        planned = plan_all(workspace, domains)
        refusals = [reason for p in planned for reason in p.plan.refusals()]
        if refusals:
            raise RefusedError("apply refused, nothing was applied:\n  " + "\n  ".join(refusals))
        applied = []
        for item in planned:
            if not item.plan.has_changes:
                applied.append(Applied(item.plan, None))
                continue
            recipients = apply_changes(item.state.recipients, item.plan.changes)
            new_state = State(item.spec.domain, recipients, item.state.hold)
            try:
                sha = _commit_state(workspace, store, new_state, commit_message(item.plan, "apply"))
            except GitError as exc:
                done = ", ".join(f"{a.plan.domain} ({a.commit[:10]})" for a in applied if a.commit)
                raise GitError(
                    f"{item.spec.domain}: {exc.message}",
                    f"its state file was put back; already committed: {done}" if done else None,
                ) from None
            applied.append(Applied(item.plan, sha))
        return applied


def _commit_state(workspace: Workspace, store: GitStore, state: State, message: str) -> str:
    path = workspace.state_file(state.domain)
    write_state(path, dump_state(state, workspace.spec_label(state.domain)))
    return store.commit_file(path, message)


def rollback(
    workspace: Workspace, domain: str, to: str | None, now: datetime | None = None
) -> Applied:
    """Restore the state of ``domain`` as of ``to`` (default: before its last sync) as a new
    commit, and put the domain on hold so the next sync does not undo the rollback."""
    path = workspace.state_file(domain)
    with workspace.store() as store, store.lock():
        store.preflight([workspace.state_dir])
        current = load_state(path, domain)
        target = store.resolve(to) if to else _before_last_sync(store, path, domain)
        text = store.read_at(target, path)
        if text is None and not path.exists():
            # A mistyped domain would otherwise get a state file of its own, and a hold.
            raise ConfigError(
                f"{domain} has no state file {path}, now or at {target[:10]}",
                "check the domain name; `reconciler history` lists the domains with a state",
            )
        restored = parse_state(text, path, domain) if text is not None else State(domain)
        when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        hold = Hold(reason=f"rolled back to {target[:10]}", since=when)
        plan = DomainPlan(
            domain=domain,
            changes=compute_changes(current.recipients, restored.recipients),
            existing_count=len(current.recipients),
            desired_count=len(restored.recipients),
            source=f"state as of {target[:10]}",
            guarded=False,
        )
        subject = f"Roll back {domain} to {target[:10]}"
        message = commit_message(plan, "rollback", subject, {"Reconciler-Rollback-To": target})
        sha = _commit_state(workspace, store, State(domain, restored.recipients, hold), message)
        return Applied(plan, sha)


def _before_last_sync(store: GitStore, path: Path, domain: str) -> str:
    """The commit just before the domain's last sync (its parent)."""
    for commit in store.log(path):
        if commit.trailers.get("Reconciler-Action") == "apply":
            return store.resolve(f"{commit.sha}^")
    raise RefusedError(f"{domain} has no sync commit to roll back", "name a revision with --to REV")


def resume(workspace: Workspace, domain: str) -> Applied:
    """Lift the hold of ``domain`` with a commit; nothing to do when it is not held."""
    path = workspace.state_file(domain)
    with workspace.store() as store, store.lock():
        store.preflight([workspace.state_dir])
        state = load_state(path, domain)
        count = len(state.recipients)
        plan = DomainPlan(domain, (), count, count, "resume", guarded=False)
        if state.hold is None:
            return Applied(plan, None)
        message = commit_message(
            plan, "resume", f"Resume syncs of {domain}", {"Reconciler-Hold-Was": state.hold.reason}
        )
        return Applied(
            plan, _commit_state(workspace, store, State(domain, state.recipients), message)
        )


def history(workspace: Workspace, domains: Sequence[str]) -> list[tuple[str, Commit]]:
    """(domain, commit) for every commit that changed a domain's state, newest first."""
    names = list(domains) or sorted(p.stem for p in workspace.state_dir.glob("*.yaml"))
    with workspace.store() as store:
        entries = [(d, c) for d in names for c in store.log(workspace.state_file(d))]
    # Compare instants, not the text of dates written in different time zones.
    return sorted(entries, key=lambda e: datetime.fromisoformat(e[1].date), reverse=True)


@dataclass(frozen=True)
class ConnectionReport:
    facts: dict[str, str]
    entries: int
    recipients: int
    first: list[tuple[str, Recipient]]


def test_connection(workspace: Workspace, domain: str, show: int = 5) -> ConnectionReport:
    """Read a domain's directory once and report how (server, TLS, bind, base DN) and what."""
    (spec,) = load_specs(workspace.inventory_dir, [domain])
    source, result = read_directory(spec)
    first = sorted(result.recipients.items())[:show]
    return ConnectionReport(
        source.connection_facts(), result.entries_read, len(result.recipients), first
    )
