"""verdict_in_child: a check answered by a forked child while the parent gets on, and every way
the child can fail to answer (then None: the caller checks for itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler import forked
from reconciler.forked import verdict_in_child

DEMO_INVENTORY = Path(__file__).parent.parent / "inventories"


def own_children() -> list[str]:
    """The state letters of this process's child processes (Z: a zombie nobody waited for)."""
    me = str(os.getpid())
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # (gone meanwhile)
        if fields[1] == me:
            states.append(fields[0])
    return states


@pytest.fixture(autouse=True)
def single_threaded() -> None:
    assert threading.active_count() == 1, "another thread runs: no child would be forked"


@pytest.mark.parametrize("answer", [True, False])
def test_the_child_answers_and_meanwhile_runs_here_once(answer: bool) -> None:
    parent, checked_in, ran_in = os.getpid(), [], []

    def check() -> bool:
        checked_in.append(os.getpid())
        return answer

    assert verdict_in_child(check, lambda: ran_in.append(os.getpid())) is answer
    assert ran_in == [parent]
    assert checked_in == []  # (the child's list, not this one, got the pid)
    assert "Z" not in own_children()


def test_a_check_that_raises_leaves_the_answer_to_the_caller() -> None:
    def check() -> bool:
        raise ValueError("broken")

    ran = []
    assert verdict_in_child(check, lambda: ran.append(1)) is None
    assert ran == [1]


def test_a_child_that_dies_leaves_the_answer_to_the_caller() -> None:
    def check() -> bool:
        os.kill(os.getpid(), signal.SIGKILL)
        return True

    assert verdict_in_child(check, lambda: None) is None
    assert "Z" not in own_children()


def test_an_error_meanwhile_is_raised_and_the_child_still_waited_for() -> None:
    def meanwhile() -> None:
        raise RuntimeError("meanwhile failed")

    with pytest.raises(RuntimeError, match="meanwhile failed"):
        verdict_in_child(lambda: True, meanwhile)
    assert "Z" not in own_children()


def test_with_another_thread_running_nothing_is_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    def fork() -> int:
        raise AssertionError("forked with a thread running")

    monkeypatch.setattr(forked.os, "fork", fork)
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        ran = []
        assert verdict_in_child(lambda: True, lambda: ran.append(1)) is None
        assert ran == [1]
    finally:
        release.set()
        thread.join()


def test_a_fork_that_fails_leaves_the_answer_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(forked.os, "fork", fork)
    opened = len(list(Path("/proc/self/fd").iterdir()))
    ran = []
    assert verdict_in_child(lambda: True, lambda: ran.append(1)) is None
    assert ran == [1]
    assert len(list(Path("/proc/self/fd").iterdir())) == opened  # the pipe was closed


def test_the_child_does_not_flush_the_parents_buffered_output(tmp_path: Path) -> None:
    # Text written but not yet flushed when the child is forked would be written twice if the
    # child left through the usual exit.
    script = (
        "import sys\n"
        "from reconciler.forked import verdict_in_child\n"
        "sys.stdout.write('once\\n')\n"
        "print(verdict_in_child(lambda: True, lambda: None))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out == "once\nTrue\n"


def test_a_plan_never_imports_jsonschema_for_valid_specs() -> None:
    """The schema check of the specs and its import happen in the child only."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import reconciler.cli\n"
        "from reconciler.directory import import_ldap_client\n"
        "from reconciler.inventory import load_specs\n"
        f"specs = load_specs(Path({str(DEMO_INVENTORY)!r}), meanwhile=import_ldap_client)\n"
        "print(len(specs), 'jsonschema' in sys.modules, 'reconciler.ldap_source' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out == "1 False True\n"
