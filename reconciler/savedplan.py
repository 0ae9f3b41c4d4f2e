"""Saved plans: `plan --out FILE` writes one, `apply --plan FILE` applies exactly it.

A saved plan is the JSON plan (schemas/plan.schema.json) with the commit it was made at and,
per domain, three fingerprints of what it was made from:

- ``spec``: the effective spec (the domain's file merged over defaults.yaml);
- ``state``: the bytes of the domain's state file;
- ``directory``: the directory snapshot, taken as the desired recipients the directory mapped
  to (address and canonical record of each). Attributes the mapping does not use, such as
  lastLogon, change all the time in a live directory and do not make a plan stale.

It applies only while all three are unchanged and the plan made again has the same digest;
otherwise apply refuses with "stale plan". Other commits since (the merge of the pull request
that carried the plan, say) do not matter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError, RefusedError
from reconciler.inventory import schema_dir
from reconciler.plan import DomainPlan, plan_digest
from reconciler.recipient import Recipient
from reconciler.render import PLAN_FORMAT_VERSION, iter_json
from reconciler.state import StoredRecipients, write_state

if TYPE_CHECKING:
    import jsonschema

PLAN_SCHEMA = "plan.schema.json"
FINGERPRINTS = ("spec", "state", "directory")


def state_fingerprint(path: Path) -> str:
    """The state file's bytes as a digest ("absent" for a domain never synced)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "absent"


def directory_fingerprint(recipients: Mapping[str, Recipient]) -> str:
    """The desired recipients as a digest: every address with its canonical record."""
    text_of = (
        recipients.text_of
        if isinstance(recipients, StoredRecipients)
        else (lambda a: recipients[a].to_json())
    )
    digest = hashlib.sha256()
    for address in sorted(recipients):
        digest.update(f"{address}\t{text_of(address)}\n".encode())
    return digest.hexdigest()


def write_plan(path: Path, plans: Sequence[DomainPlan], base_commit: str | None) -> None:
    """Write the saved plan atomically (a reader never sees half of it)."""
    try:
        write_state(path, "".join(iter_json(plans, base_commit=base_commit, saved=True)))
    except OSError as exc:
        raise ConfigError(f"cannot write the plan to {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class SavedDomain:
    domain: str
    digest: str
    fingerprints: Mapping[str, str]


@dataclass(frozen=True)
class SavedPlan:
    path: Path
    base_commit: str | None
    domains: tuple[SavedDomain, ...]


@cache
def _plan_validator() -> jsonschema.Draft7Validator:
    import jsonschema  # (not at the top: only reading a saved plan needs it)

    schema = json.loads((schema_dir() / PLAN_SCHEMA).read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def load_plan(path: Path) -> SavedPlan:
    """Read and check a saved plan: its schema, its version, and that each domain's changes
    still hash to the digest it carries (an edited plan file is not a reviewed plan)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the plan {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a JSON plan: {exc}") from None
    if isinstance(data, dict) and data.get("format_version") != PLAN_FORMAT_VERSION:
        raise ConfigError(
            f"{path} is a plan of format_version {data.get('format_version')!r}; "
            f"this reconciler reads {PLAN_FORMAT_VERSION}",
            "make the plan again with this version",
        )
    # The changes are checked through the digest below: validating 100k of them one by one
    # against the schema would take longer than making the plan again.
    errors = list(_plan_validator().iter_errors(_without_changes(data)))
    if errors:
        error = min(errors, key=lambda e: list(map(str, e.absolute_path)))
        where = "/".join(map(str, error.absolute_path)) or "the top level"
        raise ConfigError(f"{path} is not a valid plan: {error.message} (at {where})")
    if "base_commit" not in data:
        raise ConfigError(
            f"{path} is a plan printed by `plan --format json`, not one saved with `plan --out`",
            "save the plan with `reconciler plan --out FILE`",
        )
    domains = []
    for entry in data["domains"]:
        changes = entry["changes"]
        if (
            not isinstance(changes, list)
            or plan_digest(entry["domain"], changes) != entry["digest"]
        ):
            raise ConfigError(
                f"{path}: the changes of {entry['domain']} do not match the plan's digest "
                f"{entry['digest']}; the file was edited after it was saved",
                "make the plan again with `reconciler plan --out FILE`",
            )
        fingerprints = entry.get("fingerprints")
        if not isinstance(fingerprints, dict):
            raise ConfigError(f"{path}: {entry['domain']} has no fingerprints; not a saved plan")
        domains.append(SavedDomain(entry["domain"], entry["digest"], fingerprints))
    return SavedPlan(path, data["base_commit"], tuple(domains))


def _without_changes(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("domains"), list):
        return data
    domains = [
        {**d, "changes": []} if isinstance(d, dict) and "changes" in d else d
        for d in data["domains"]
    ]
    return {**data, "domains": domains}


def check_fresh(saved: SavedPlan, plans: Sequence[DomainPlan], head: str | None) -> None:
    """Refuse (stale plan) unless every domain's spec, state and directory are as they were
    when the plan was saved, and planning again gives the very same changes."""
    by_domain = {plan.domain: plan for plan in plans}
    reasons = []
    for entry in saved.domains:
        plan = by_domain[entry.domain]
        changed = [
            name
            for name in FINGERPRINTS
            if plan.fingerprints.get(name) != entry.fingerprints.get(name)
        ]
        for name in changed:
            reasons.append(f"{entry.domain}: the {_WHAT[name]} changed since the plan was made")
        if not changed and plan.digest() != entry.digest:
            reasons.append(
                f"{entry.domain}: planning again gives digest {plan.digest()}, "
                f"the saved plan has {entry.digest}"
            )
    if reasons:
        since = f" (saved at {saved.base_commit[:10]}" if saved.base_commit else " (saved"
        since += f", HEAD is {head[:10]})" if head else ")"
        raise RefusedError(
            f"stale plan {saved.path}{since}, nothing was applied:\n  " + "\n  ".join(reasons),
            "make a new plan with `reconciler plan --out FILE`, review it, and apply that",
        )


_WHAT = {"spec": "spec", "state": "state file", "directory": "directory"}
