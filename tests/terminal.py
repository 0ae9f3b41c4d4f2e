"""Run the real command in a pseudo-terminal, as a person at a shell runs it: stdin, stdout and
stderr are the terminal (isatty() is true), and everything written to it is captured."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence

# Given all the output so far, what to type next (None: nothing yet).
Responder = Callable[[bytes], bytes | None]


def run_in_terminal(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    respond: Responder | None = None,
    timeout: float = 60,
) -> tuple[int, bytes]:
    """``python -m reconciler ARGS`` on a pseudo-terminal; its exit code and its output (with
    the terminal's \\r\\n line ends). ``env`` is added to the environment; a child still running
    after ``timeout`` seconds is terminated."""
    command = [sys.executable, "-m", "reconciler", *args]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pseudo-terminal
        try:
            os.environ.update(env or {})
            os.execv(sys.executable, command)
        finally:
            os._exit(127)  # never go on running the tests in the child
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 0.2)[0]:
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the child has exited and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            typed = respond(seen) if respond is not None else None
            if typed:
                os.write(terminal, typed)
    finally:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == 0:  # still running: stuck, waiting for input that never came, say
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
        os.close(terminal)
    return os.waitstatus_to_exitcode(status), seen
