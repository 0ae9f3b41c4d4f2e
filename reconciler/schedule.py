"""When `reconciler run` syncs a domain, and which share of the domains one job takes.

A domain is due when its ``schedule`` interval has passed since its last sync *attempt*: the
later of its last apply commit (the repository's memory, which a fresh CI checkout has too) and
the attempts this machine recorded. An attempt that found nothing to change commits nothing,
so without the record an in-sync domain would be read again on every tick of the timer.

The record lives in the Git directory (never in the work tree or state/, so it never dirties
the tree or lands in a commit) and is only a hint: losing it costs one extra read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from reconciler.gitstore import GitStore
from reconciler.runspec import ScheduleSpec
from reconciler.state import write_state

log = logging.getLogger("reconciler")

ATTEMPTS_FILE = "reconciler-run.json"
_SHARD = re.compile(r"([0-9]+)/([0-9]+)")
# Commits looked at for a domain's last sync: its own commits are mostly syncs.
_LOG_DEPTH = 50


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (1-based) of ``count``: the domains whose hash falls in it."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, domain: str) -> bool:
        """Stable across machines and Python versions (unlike ``hash()``, which is salted)."""
        digest = hashlib.sha256(domain.lower().encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


def parse_shard(text: str) -> Shard:
    """``I/N`` with 1 <= I <= N; ValueError (with what is wrong) otherwise."""
    match = _SHARD.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not I/N (e.g. 2/4: the second of four shares)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: I must be from 1 to N, and N at least 1")
    return Shard(index, count)


def is_due(schedule: ScheduleSpec, last: datetime | None, now: datetime) -> bool:
    """Whether ``schedule``'s interval has passed since ``last`` (never attempted: due)."""
    return last is None or now - last >= timedelta(seconds=schedule.interval)


def next_due(schedule: ScheduleSpec, last: datetime | None, now: datetime) -> datetime:
    return now if last is None else last + timedelta(seconds=schedule.interval)


def last_sync(store: GitStore, state_file: Path) -> datetime | None:
    """The date of the last apply commit of a state file, None when it has none."""
    for commit in store.log(state_file, limit=_LOG_DEPTH):
        if commit.trailers.get("Reconciler-Action") == "apply":
            return datetime.fromisoformat(commit.date)
    return None


def latest(*dates: datetime | None) -> datetime | None:
    known = [d for d in dates if d is not None]
    return max(known) if known else None


class Attempts:
    """The last attempt per domain on this machine, kept in the Git directory."""

    def __init__(self, store: GitStore) -> None:
        self.path = store.git_dir / ATTEMPTS_FILE
        self._data: dict[str, dict[str, str]] = self._load()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # A hint only: the schedule falls back on the commits.
            log.warning("ignoring %s: %s", self.path, exc)
            return {}
        return (
            {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
        )

    def last(self, domain: str) -> datetime | None:
        entry = self._data.get(domain)
        try:
            return datetime.fromisoformat(entry["at"]) if entry else None
        except (KeyError, TypeError, ValueError):
            return None

    def record(self, domain: str, at: datetime, outcome: str) -> None:
        self._data[domain] = {"at": at.isoformat(timespec="seconds"), "outcome": outcome}

    def save(self) -> None:
        write_state(self.path, json.dumps(dict(sorted(self._data.items())), indent=1) + "\n")

    def as_dict(self) -> Mapping[str, Mapping[str, str]]:
        return self._data
