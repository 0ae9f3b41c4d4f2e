"""`reconciler run`: the unattended job. Every due domain planned and applied on its own.

Unlike `apply` (all domains or none), each domain here is committed and published by itself
through the same guarded path (:func:`reconciler.reconcile.commit_planned`), so a refused or
failing domain never holds back the others. Directory reads may run in threads (``jobs``):
they wait on the network; specs are loaded, and commits made, one at a time in the caller's
thread, in domain order, so the commits do not depend on ``jobs``.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.errors import EXIT_ERROR, EXIT_REFUSED, ReconcilerError
from reconciler.gitstore import GitStore
from reconciler.guards import Overrides
from reconciler.inventory import check_inventory, spec_files
from reconciler.notify import Delivery, Report, notify
from reconciler.reconcile import (
    GuardsRefused,
    Planned,
    ProgressFor,
    Workspace,
    bulk_objects,
    commit_planned,
    plan_domain,
    prepare,
    watching,
)
from reconciler.render import render_domain_text
from reconciler.schedule import Attempts, Shard, is_due, last_sync, latest, next_due
from reconciler.spec import DomainSpec
from reconciler.state import load_state

log = logging.getLogger("reconciler")

APPLIED, IN_SYNC, REFUSED, FAILED, HELD = "applied", "in sync", "refused", "failed", "held"
# What each outcome tells the people in notify.*.on (None: nothing happened).
EVENTS = {APPLIED: "changes", REFUSED: "blocked", FAILED: "errors", IN_SYNC: None, HELD: None}
RUN_TRAILERS = {"Reconciler-Via": "run"}


@dataclass(frozen=True)
class DomainRun:
    """What became of one domain in a run."""

    domain: str
    outcome: str
    planned: Planned | None = None
    commit: str | None = None
    reasons: tuple[str, ...] = ()  # refusals, or the error, or the hold
    deliveries: tuple[Delivery, ...] = ()

    def report(self) -> Report:
        plan = self.planned.plan if self.planned else None
        return Report(
            domain=self.domain,
            outcome=self.outcome,
            event=EVENTS[self.outcome],
            counts=plan.counts() if plan else {},
            summary=plan.summary() if plan else "",
            plan_lines=tuple(render_domain_text(plan)[:-1]) if plan and plan.has_changes else (),
            reasons=self.reasons if self.outcome == REFUSED else (),
            error=self.reasons[0] if self.outcome == FAILED and self.reasons else None,
            commit=self.commit,
        )


@dataclass(frozen=True)
class RunResult:
    domains: list[DomainRun]
    not_due: list[tuple[str, datetime]] = field(default_factory=list)
    unscheduled: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The worst outcome: 1 if a domain failed, else 4 if one was refused, else 0.
        Notifications never count: a failed delivery does not change what the sync earned."""
        outcomes = {d.outcome for d in self.domains}
        return EXIT_ERROR if FAILED in outcomes else EXIT_REFUSED if REFUSED in outcomes else 0


def run(
    workspace: Workspace,
    domains: Sequence[str] = (),
    *,
    jobs: int = 1,
    shard: Shard | None = None,
    now: datetime | None = None,
    progress: ProgressFor | None = None,
) -> RunResult:
    """Sync the named ``domains`` now, or (none named) every domain whose schedule is due.

    A domain without a schedule runs only when named: syncing it on every tick of a timer would
    make the schedule of the others meaningless. ``now`` is the clock (for tests); ``progress``
    watches the directory reads, from the threads they run in when ``jobs`` is over 1.
    """
    now = now or datetime.now(UTC)
    with workspace.store() as store, store.lock():
        prepare(workspace, store)
        names = list(dict.fromkeys(domains)) or [
            p.stem for p in spec_files(workspace.inventory_dir)
        ]
        if shard is not None:
            names = [name for name in names if shard.holds(name)]
        attempts = Attempts(store)
        result = RunResult([])
        chosen: list[DomainSpec] = []
        for name in names:
            spec, failure = _load_spec(workspace, name)
            if failure is not None:
                result.domains.append(failure)
            elif spec is not None and (
                domains or _due(workspace, store, attempts, spec, now, result)
            ):
                chosen.append(spec)
        try:
            for spec, read in _read_all(workspace, chosen, jobs, progress):
                done = _finish(workspace, store, spec, read)
                attempts.record(spec.domain, now, done.outcome)
                result.domains.append(done)
        finally:
            attempts.save()
        result.domains.sort(key=lambda d: d.domain)
        return result


def _load_spec(workspace: Workspace, name: str) -> tuple[DomainSpec | None, DomainRun | None]:
    """One spec on its own, so that a broken spec fails only its domain."""
    try:
        specs, problems = check_inventory(workspace.inventory_dir, [name])
    except ReconcilerError as exc:
        return None, DomainRun(name, FAILED, reasons=(exc.message,))
    if problems:
        return None, DomainRun(name, FAILED, reasons=tuple(str(p) for p in problems))
    return specs[0], None


def _due(
    workspace: Workspace,
    store: GitStore,
    attempts: Attempts,
    spec: DomainSpec,
    now: datetime,
    result: RunResult,
) -> bool:
    if spec.schedule is None:
        result.unscheduled.append(spec.domain)
        return False
    last = latest(last_sync(store, workspace.state_file(spec.domain)), attempts.last(spec.domain))
    if is_due(spec.schedule, last, now):
        return True
    result.not_due.append((spec.domain, next_due(spec.schedule, last, now)))
    return False


@dataclass(frozen=True)
class _Read:
    """A worker's answer: the domain planned, or held (not read), or why it failed."""

    planned: Planned | None = None
    held: str | None = None
    error: str | None = None


def _read(workspace: Workspace, spec: DomainSpec, progress: ProgressFor | None) -> _Read:
    """Load the state and, unless the domain is on hold, read and plan it. Never raises."""
    try:
        # Its lines are checked by the plan, as it compares them with the directory's.
        state = load_state(workspace.state_file(spec.domain), spec.domain, check=False)
        if state.hold is not None:
            # Not read at all: a rollback's hold means "leave this domain alone".
            return _Read(held=f"on hold since {state.hold.since}: {state.hold.reason}")
        with watching(progress, spec.domain) as watch:
            domain_plan = plan_domain(spec, state, progress=watch)
        return _Read(planned=Planned(spec, state, domain_plan))
    except ReconcilerError as exc:
        return _Read(error=str(exc))
    except Exception as exc:  # one domain's bug must not end the others' run
        log.debug("%s: unexpected error", spec.domain, exc_info=True)
        return _Read(error=f"unexpected {type(exc).__name__}: {exc}")


def _read_all(
    workspace: Workspace, specs: Sequence[DomainSpec], jobs: int, progress: ProgressFor | None
) -> Iterator[tuple[DomainSpec, _Read]]:
    """Each spec with its read, in the order given; at most ``jobs`` reads at a time, and at
    most ``jobs`` plans held in memory ahead of the commits."""
    if jobs <= 1:
        for spec in specs:
            with bulk_objects():
                read = _read(workspace, spec, progress)
            yield spec, read
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="reconciler-read") as pool:
        queue = iter(specs)
        pending: collections.deque[tuple[DomainSpec, Future[_Read]]] = collections.deque(
            (spec, pool.submit(_read, workspace, spec, progress))
            for spec in itertools.islice(queue, jobs)
        )
        while pending:
            spec, future = pending.popleft()
            for following in itertools.islice(queue, 1):
                pending.append((following, pool.submit(_read, workspace, following, progress)))
            yield spec, future.result()


def _finish(workspace: Workspace, store: GitStore, spec: DomainSpec, read: _Read) -> DomainRun:
    """Commit a planned domain through the guards, then notify. Never raises for the domain."""
    if read.held is not None:
        done = DomainRun(spec.domain, HELD, reasons=(read.held,))
    elif read.error is not None or read.planned is None:
        done = DomainRun(spec.domain, FAILED, reasons=(read.error or "not read",))
    else:
        done = _commit(workspace, store, read.planned)
    deliveries = notify(spec.notify, done.report(), spec.source.parent)
    for delivery in deliveries:
        level = logging.INFO if delivery.ok else logging.WARNING
        log.log(level, "%s: %s", spec.domain, delivery.describe())
    return DomainRun(
        done.domain, done.outcome, done.planned, done.commit, done.reasons, tuple(deliveries)
    )


def _commit(workspace: Workspace, store: GitStore, planned: Planned) -> DomainRun:
    domain = planned.spec.domain
    try:
        [applied] = commit_planned(workspace, store, [planned], Overrides(), trailers=RUN_TRAILERS)
    except GuardsRefused as exc:
        return DomainRun(domain, REFUSED, planned, reasons=tuple(exc.reasons))
    except ReconcilerError as exc:  # a hook said no, the branch moved, a file is unwritable
        return DomainRun(domain, FAILED, planned, reasons=(str(exc),))
    outcome = APPLIED if applied.commit else IN_SYNC
    return DomainRun(domain, outcome, planned, applied.commit)


def summary_table(result: RunResult) -> list[str]:
    """One row per domain acted on: domain, outcome, counts, commit or reason; then the
    notifications that failed."""
    rows = [("DOMAIN", "OUTCOME", "CHANGES", "COMMIT / REASON")]
    for done in result.domains:
        plan = done.planned.plan if done.planned else None
        counts = " ".join(f"{k}={v}" for k, v in plan.counts().items()) if plan else "-"
        detail = done.commit[:10] if done.commit else (done.reasons[0] if done.reasons else "")
        rows.append((done.domain, done.outcome, counts, detail.splitlines()[0] if detail else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    for done in result.domains:
        lines += [f"{done.domain}: {d.describe()}" for d in done.deliveries if not d.ok]
    return [line.rstrip() for line in lines]
