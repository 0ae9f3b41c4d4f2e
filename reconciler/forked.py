"""A yes-or-no check computed in a forked child process while this process gets on.

For start-up work in two halves that meet only at the end: checking the specs against the
schema (importing jsonschema is a fifth of a second) while the parent imports the directory
client it needs next. On two cores the pair takes the time of the longer half.

The child is only ever a shortcut: when it cannot answer (no fork on this system, other
threads running, the fork failed, the check raised or the child died) the answer is None and
the caller does the check itself, in this process, with its error messages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import NoReturn

_YES, _NO = b"1", b"0"


def verdict_in_child(check: Callable[[], bool], meanwhile: Callable[[], object]) -> bool | None:
    """``check()`` as computed in a forked child, with ``meanwhile()`` run here in the
    meantime (it runs once in any case); None when the child could not tell."""
    # Forking with other threads running copies whatever locks they hold, held: the child
    # could wait for them forever. Only a single-threaded process forks.
    if not hasattr(os, "fork") or threading.active_count() > 1:
        meanwhile()
        return None
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        meanwhile()
        return None
    if pid == 0:  # the child, which never returns from here
        _answer(check, read_end, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        try:
            meanwhile()
            answer = pipe.read()
        finally:
            os.waitpid(pid, 0)  # (the child is done by then: the pipe holds one byte at most)
    return True if answer == _YES else False if answer == _NO else None


def _answer(check: Callable[[], bool], read_end: int, write_end: int) -> NoReturn:
    """In the child: one byte down the pipe (none when the check raised), then out, without
    the parent's exit handlers or a second flush of its buffered output."""
    answer = b""
    try:
        try:
            os.close(read_end)
            answer = _YES if check() else _NO
        finally:
            os.write(write_end, answer)
    finally:
        os._exit(0)  # (an exception raised above goes no further: the parent checks itself)
