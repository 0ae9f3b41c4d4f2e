"""What the CLI writes on stderr besides results: log records, and the progress line of
directory reads on a terminal. Both go through one lock, since `run --jobs N` reads in threads."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.directory import Progress
from reconciler.reconcile import ProgressFor

log = logging.getLogger("reconciler")


@dataclass
class _Read:
    entries: int
    pages: int


class _ProgressLine:
    """How far directory reads have got, as one line of stderr rewritten in place (``\r``).

    Only on a terminal: a log file or a pipe gets none of it. Plain text, no escape sequences
    (the line is blanked with spaces), so NO_COLOR and dumb terminals need nothing special.
    One read: "example.com: 12000 entries read (24 pages)"; reads at once share the line,
    "reading a.com 12000 entries, b.com 3000 entries", in the order they started."""

    def __init__(self) -> None:
        self._width = 0
        # Reentrant: the log handler holds it around clear() and its own write.
        self.lock = threading.RLock()
        self._reads: dict[str, _Read | None] = {}  # being read; None: nothing told yet

    @contextlib.contextmanager
    def reading(self, domain: str) -> Iterator[Progress]:
        """Show the domain's read on the line while it lasts (a :data:`ProgressFor`)."""
        with self.lock:
            self._reads[domain] = None
        try:
            yield lambda entries, pages: self._told(domain, _Read(entries, pages))
        finally:
            with self.lock:
                del self._reads[domain]
                self._redraw()

    def _told(self, domain: str, read: _Read) -> None:
        with self.lock:
            if domain in self._reads:  # not a late word from a read already over
                self._reads[domain] = read
                self._redraw()

    def _redraw(self) -> None:
        told = [(domain, read) for domain, read in self._reads.items() if read is not None]
        if not told:
            self.clear()
        elif len(told) == 1:
            self._show(_one(*told[0]))
        else:
            self._show("reading " + ", ".join(f"{d} {r.entries} entries" for d, r in told))

    def _show(self, text: str) -> None:
        # Within one row: \r goes back only to the start of the row the cursor is on.
        text = text[: shutil.get_terminal_size().columns - 1]
        with self.lock:
            stream = sys.stderr  # looked up each time: the test runner swaps it
            stream.write("\r" + text.ljust(self._width))
            stream.flush()
            self._width = len(text)

    def clear(self) -> None:
        """Blank the line, so what comes next starts on a clean line."""
        with self.lock:
            if self._width:
                sys.stderr.write("\r" + " " * self._width + "\r")
                sys.stderr.flush()
                self._width = 0


def _one(domain: str, read: _Read) -> str:
    paged = f" ({read.pages} page{'' if read.pages == 1 else 's'})" if read.pages else ""
    return f"{domain}: {read.entries} entries read{paged}"


_PROGRESS = _ProgressLine()


class _ChatterHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log records on stderr, after blanking a progress line that is showing; under the
    line's lock, so a record and the line are never written into each other."""

    def emit(self, record: logging.LogRecord) -> None:
        with _PROGRESS.lock:
            _PROGRESS.clear()
            super().emit(record)


def configure_logging(*, quiet: bool, verbose: int) -> None:
    """Log records of the "reconciler" logger to stderr: with ``quiet`` only warnings and
    errors, with ``verbose`` debug too."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = _ChatterHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


@contextlib.contextmanager
def progress_line(*, quiet: bool) -> Iterator[ProgressFor | None]:
    """The progress line while directories are read: None (silent) when ``quiet`` or stderr
    is not a terminal; blanked when the reads are over."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    try:
        yield _PROGRESS.reading
    finally:
        _PROGRESS.clear()
