"""The workflows behind the commands: plan, apply, rollback, resume (history: history.py).

This is the edge where the pure middle (mapping, diff, plan) meets files, the directory and
Git. Nothing is written until every domain of a run has been planned and checked.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.directory import (
    DirectorySource,
    Progress,
    ReadInterrupted,
    import_ldap_client,
    open_source,
)
from reconciler.errors import ConfigError, GitError, RefusedError
from reconciler.gitstore import GitStore, find_git_dir
from reconciler.groups import members_of, read_groups
from reconciler.guards import Overrides, remaining
from reconciler.inventory import load_specs
from reconciler.lists import list_filter, map_lists, read_lists
from reconciler.mapping import MappingResult, finish, map_entries
from reconciler.plan import DomainPlan, apply_changes, compute_changes
from reconciler.policy import apply_policy
from reconciler.recipient import Recipient
from reconciler.renames import fold_renames, renames_in, with_recipient_defaults
from reconciler.render import commit_message
from reconciler.savedplan import SavedPlan, check_fresh, directory_fingerprint, state_fingerprint
from reconciler.spec import DomainSpec
from reconciler.state import (
    Hold,
    State,
    iter_state_text,
    load_state,
    parse_state,
    state_path,
)
from reconciler.transaction import Transaction, recover, transaction, unfinished

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
    spec: DomainSpec, *, trace: str | None = None, progress: Progress | None = None
) -> tuple[DirectorySource, MappingResult]:
    """Read and map the whole directory of ``spec``; only a complete read returns.
    ``trace`` (an address) records what became of it (for `explain`); ``progress`` is told
    how far each search has got."""
    source = open_source(spec, progress)
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
    finish(result)
    # Which entry claimed which address matters only while entries claim them (conflicts are
    # recorded by then); dropped before the diff, when a big plan holds the most memory.
    result.owners.clear()
    result.primary_of.clear()
    return result


def plan_domain(
    spec: DomainSpec,
    state: State,
    fingerprints: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> DomainPlan:
    """Read the directory, map it, diff it against ``state`` and apply the spec's policy.

    ``fingerprints``: when given (with "spec" and "state"), the directory snapshot's digest
    is added and the plan carries them, for a saved plan."""
    source, result = read_directory(spec, progress=progress)
    notes = []
    if result.entries_without_id and spec.users.id_attribute:
        notes.append(
            f"{result.entries_without_id} entries have no {spec.users.id_attribute}; "
            "their DN is used as id"
        )
    notes += invalid_notes(result)
    existing = state.recipients
    desired: Mapping[str, Recipient] = result.recipients
    changes = compute_changes(existing, desired)
    renames = renames_in(changes)
    defaulted = with_recipient_defaults(desired, existing, renames, spec.recipient_defaults)
    if defaulted is not desired:  # new mailboxes were given the defaults: diff them again
        desired, changes = defaulted, compute_changes(existing, defaulted)
    if fingerprints is not None:
        fingerprints = {**fingerprints, "directory": directory_fingerprint(desired)}
    changes, skipped = apply_policy(
        fold_renames(changes, renames, existing), spec.policy, spec.protected
    )
    return DomainPlan(
        domain=spec.domain,
        changes=changes,
        existing_count=len(existing),
        desired_count=len(desired),
        source=f"{source.describe()}: {result.entries_read} matching entries",
        dropped=dict(result.dropped),
        conflicts=result.conflict_list(),
        hold=state.hold,
        notes=tuple(notes),
        skipped=skipped,
        limits=spec.policy.limits,
        fingerprints=fingerprints or {},
    )


MAX_INVALID_NOTES = 50


def invalid_notes(result: MappingResult) -> list[str]:
    """One note per skipped value (entry DN, attribute, value, why), capped for huge messes."""
    notes = [f"skipped: {v.describe()}" for v in result.invalid[:MAX_INVALID_NOTES]]
    if len(result.invalid) > MAX_INVALID_NOTES:
        notes.append(f"… and {len(result.invalid) - MAX_INVALID_NOTES} more invalid values")
    return notes


# Brackets a domain's read: entered as it starts, giving the callback told how far it has got,
# and left when it is over, so that a display of reads running at once (the CLI's progress line)
# knows which ones are still going. Called from the threads the reads run in.
ProgressFor = Callable[[str], contextlib.AbstractContextManager[Progress]]


def watching(
    progress: ProgressFor | None, domain: str
) -> contextlib.AbstractContextManager[Progress | None]:
    """``progress(domain)``, or a callback of None when no one is watching."""
    return progress(domain) if progress is not None else contextlib.nullcontext()


def plan_all(
    workspace: Workspace,
    domains: Sequence[str],
    *,
    fingerprints: bool = False,
    progress: ProgressFor | None = None,
) -> list[Planned]:
    """Plan every named domain (all when none are named). Writes nothing.

    ``fingerprints``: record what each plan was made from, for `plan --out`."""
    planned = []
    # The LDAP client is imported while the specs are checked: most inventories read LDAP,
    # and one that reads LDIF only loses nothing on a machine with two cores.
    for spec in load_specs(workspace.inventory_dir, domains, meanwhile=import_ldap_client):
        path = workspace.state_file(spec.domain)
        with bulk_objects():
            # Its lines are checked by the plan, as it compares them with the directory's.
            state = load_state(path, spec.domain, check=False)
            made_from = (
                {"spec": spec.digest, "state": state_fingerprint(path)} if fingerprints else None
            )
            with watching(progress, spec.domain) as watch:
                domain_plan = plan_domain(spec, state, made_from, watch)
            planned.append(Planned(spec, state, domain_plan))
    return planned


def unfinished_apply(workspace: Workspace) -> str | None:
    """A warning when a killed apply left the work tree behind its commits, else None."""
    git_dir = find_git_dir(workspace.repo_dir)
    return unfinished(git_dir) if git_dir is not None else None


def base_commit(workspace: Workspace) -> str | None:
    """The commit a plan is made at, None outside a repository or before the first commit."""
    try:
        with workspace.store() as store:
            return store.head()
    except GitError:
        return None


@contextlib.contextmanager
def bulk_objects() -> Iterator[None]:
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
            # What was made meanwhile goes to the oldest generation unscanned: the first
            # collection after the pause would look at every object of it (0.1 s at 100k).
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def apply_all(
    workspace: Workspace,
    domains: Sequence[str],
    overrides: Overrides | None = None,
    *,
    saved: SavedPlan | None = None,
    branch: str | None = None,
    progress: ProgressFor | None = None,
) -> list[Applied]:
    """Plan, check every domain, then commit each changed one and publish them together.

    All-or-nothing: if any domain is refused, or any commit fails (a hook says no), nothing is
    published. ``overrides`` pass the limits of the plans they name; ``saved``: apply exactly
    that saved plan (refused as stale if what it was made from changed); ``branch``: publish
    to that new branch and leave the current branch and work tree alone; ``progress`` watches
    the directory reads (see :func:`plan_all`).
    """
    with workspace.store() as store, store.lock():
        prepare(workspace, store, detached_ok=bool(branch))
        if saved is not None:
            domains = [entry.domain for entry in saved.domains]
        planned = plan_all(workspace, domains, fingerprints=saved is not None, progress=progress)
        if saved is not None:
            check_fresh(saved, [item.plan for item in planned], store.head())
        return commit_planned(workspace, store, planned, overrides or Overrides(), branch=branch)


class GuardsRefused(RefusedError):
    """The guards refused a run's plans; ``reasons`` are the refusals' messages."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("apply refused, nothing was applied:\n  " + "\n  ".join(reasons))
        self.reasons = reasons


def prepare(workspace: Workspace, store: GitStore, *, detached_ok: bool = False) -> None:
    """Under the lock, before any plan: finish what a killed run left, refuse an unsafe tree."""
    _recover(store)
    store.preflight([workspace.state_dir, workspace.inventory_dir], detached_ok=detached_ok)


def commit_planned(
    workspace: Workspace,
    store: GitStore,
    planned: Sequence[Planned],
    overrides: Overrides,
    *,
    branch: str | None = None,
    trailers: dict[str, str] | None = None,
) -> list[Applied]:
    """Check the guards of ``planned`` together, then commit each changed domain (one commit
    per domain) in one transaction: all published, or none (GuardsRefused, GitError).

    `apply` passes every domain of the run at once; `run` passes one domain at a time, so that
    one refused or failing domain does not hold back the others. The caller holds the lock.
    """
    plans = [item.plan for item in planned]
    refusals = remaining(plans, overrides)
    if refusals:
        raise GuardsRefused([r.message for r in refusals])
    if not any(plan.has_changes for plan in plans):
        return [Applied(plan, None) for plan in plans]
    applied = []
    writes = [_state_path(workspace, store, i.spec.domain) for i in planned if i.plan.has_changes]
    with transaction(store, branch=branch, writes=writes) as txn:
        for item in planned:
            if not item.plan.has_changes:
                applied.append(Applied(item.plan, None))
                continue
            recipients = apply_changes(item.state.recipients, item.plan.changes)
            new_state = State(item.spec.domain, recipients, item.state.hold)
            message = commit_message(item.plan, "apply", trailers=trailers)
            try:
                sha = _commit_state(workspace, txn, new_state, message)
            except GitError as exc:
                raise GitError(
                    f"{item.spec.domain}: {exc.message}",
                    "nothing was applied: no domain's commit was published",
                ) from None
            applied.append(Applied(item.plan, sha))
    return applied


def _recover(store: GitStore) -> None:
    for done in recover(store):
        log.warning("%s", done)


def _commit_state(workspace: Workspace, txn: Transaction, state: State, message: str) -> str:
    text = iter_state_text(state, workspace.spec_label(state.domain))
    return txn.commit(_state_path(workspace, txn.store, state.domain), text, message)


def _state_path(workspace: Workspace, store: GitStore, domain: str) -> Path:
    """The state file of ``domain`` relative to the repository."""
    return store.relative(workspace.state_file(domain))


def rollback(
    workspace: Workspace, domain: str, to: str | None, now: datetime | None = None
) -> Applied:
    """Restore the state of ``domain`` as of ``to`` (default: before its last sync) as a new
    commit, and put the domain on hold so the next sync does not undo the rollback."""
    path = workspace.state_file(domain)
    with workspace.store() as store, store.lock():
        _recover(store)
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
        with transaction(store, writes=[_state_path(workspace, store, domain)]) as txn:
            sha = _commit_state(workspace, txn, State(domain, restored.recipients, hold), message)
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
        _recover(store)
        store.preflight([workspace.state_dir])
        state = load_state(path, domain)
        count = len(state.recipients)
        plan = DomainPlan(domain, (), count, count, "resume", guarded=False)
        if state.hold is None:
            return Applied(plan, None)
        message = commit_message(
            plan, "resume", f"Resume syncs of {domain}", {"Reconciler-Hold-Was": state.hold.reason}
        )
        with transaction(store, writes=[_state_path(workspace, store, domain)]) as txn:
            sha = _commit_state(workspace, txn, State(domain, state.recipients), message)
        return Applied(plan, sha)


@dataclass(frozen=True)
class ConnectionReport:
    facts: dict[str, str]
    entries: int
    recipients: int
    first: list[tuple[str, Recipient]]


def test_connection(
    workspace: Workspace, domain: str, show: int = 5, progress: Progress | None = None
) -> ConnectionReport:
    """Read a domain's directory once and report how (server, TLS, bind, base DN) and what."""
    (spec,) = load_specs(workspace.inventory_dir, [domain], meanwhile=import_ldap_client)
    source, result = read_directory(spec, progress=progress)
    first = sorted(result.recipients.items())[:show]
    return ConnectionReport(
        source.connection_facts(), result.entries_read, len(result.recipients), first
    )
