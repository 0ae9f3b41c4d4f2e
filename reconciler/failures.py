"""The failed-login counter behind `reconciler auth`'s limit on password guessing.

One small JSON file outside Git (by default in the repository's ``.git`` directory): for each
domain and user name, the times of its recent failures. Every attempt is counted as a failure
*before* the directory is asked and forgiven afterwards when it succeeds, under a file lock, so
concurrent attempts cannot all slip in while the count is one short of the limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from reconciler.errors import StateError

LOCK_TIMEOUT_SECONDS = 10.0
FORMAT = 1

Clock = Callable[[], float]


class FailureCounter:
    """Failures per key (domain and user name) within a sliding window of ``window`` seconds."""

    def __init__(self, path: Path, max_failures: int, window: float, clock: Clock) -> None:
        self.path = path
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)

    def begin(self, key: str) -> float | None:
        """Count an attempt of ``key`` as a failure in advance; returns its time, to be passed
        to :meth:`succeeded` or :meth:`forgive`. None (nothing counted) when the key already
        has ``max_failures`` failures within the window: the attempt must fail unasked."""
        with self._locked() as failures:
            now = self._clock()
            recent = failures.get(key, [])
            if len(recent) >= self.max_failures:
                return None
            failures[key] = [*recent, now]
            return now

    def succeeded(self, key: str) -> None:
        """A successful login clears the key's failures."""
        with self._locked() as failures:
            failures.pop(key, None)

    def forgive(self, key: str, attempt: float) -> None:
        """Take back the failure :meth:`begin` counted (the directory could not be asked)."""
        with self._locked() as failures:
            recent = failures.get(key, [])
            with contextlib.suppress(ValueError):
                recent.remove(attempt)
            if recent:
                failures[key] = recent
            else:
                failures.pop(key, None)

    def locked_until(self, key: str) -> float | None:
        """When the key may try again, or None when it may now."""
        with self._locked() as failures:
            recent = failures.get(key, [])
            if len(recent) < self.max_failures:
                return None
            return recent[-self.max_failures] + self.window

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, list[float]]]:
        """The failures still within the window, read and written back under the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock:
                failures = self._read()
                before = json.dumps(failures, sort_keys=True)
                horizon = self._clock() - self.window
                failures = {
                    key: kept
                    for key, times in failures.items()
                    if (kept := [t for t in times if t > horizon])
                }
                yield failures
                if json.dumps(failures, sort_keys=True) != before:
                    self._write(failures)
        except Timeout:
            raise StateError(
                f"cannot lock the failed-login counter {self.path} "
                f"within {LOCK_TIMEOUT_SECONDS:g}s",
                f"another process holds {self._lock.lock_file}",
            ) from None

    def _read(self) -> dict[str, list[float]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"cannot read the failed-login counter {self.path}: {exc}") from None
        try:
            data = json.loads(text)
            failures = data["failures"]
            if data.get("format") != FORMAT or not isinstance(failures, dict):
                raise ValueError("unexpected layout")
            return {
                str(key): [float(t) for t in times]
                for key, times in failures.items()
                if isinstance(times, list)
            }
        except (ValueError, KeyError, TypeError) as exc:
            # Failing closed: a counter that cannot be read must not let guessing go on.
            raise StateError(
                f"{self.path}: the failed-login counter is unreadable ({exc}); "
                "logins are refused until it is fixed",
                "delete the file to reset every count (it is not in Git)",
            ) from None

    def _write(self, failures: dict[str, list[float]]) -> None:
        text = json.dumps({"format": FORMAT, "failures": failures}, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp: mode 0600
                out.write(text + "\n")
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
