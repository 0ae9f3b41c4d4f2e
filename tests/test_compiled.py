"""The modules an install compiled with mypyc run only while their sources are the ones compiled.

Each case copies the installed package, changes the copy as a developer or a broken install
would, and imports it in a new interpreter. scripts/test.sh sets RECONCILER_EXPECT_COMPILED=1:
there the install must have compiled (a pure-Python install is only for machines without gcc).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reconciler
import reconciler.ldapwire
from reconciler import compiled

EXPECTED = os.environ.get("RECONCILER_EXPECT_COMPILED", "0") == "1"

# What the copy reports: its mode, where ldapwire was loaded from, and a decode through it
# (a real search result: the compiled code runs, or the Python).
PROBE = """
import json, reconciler, reconciler.ldapwire as wire
done = bytes.fromhex("300c02010265070a010004000400")
(message_id, op), = wire.MessageReader().feed(done)
print(json.dumps([reconciler.COMPILED, wire.__file__, message_id, op.result_code]))
"""


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the installed package (sources, compiled modules, their digests)."""
    if not compiled.compiled_modules():
        if EXPECTED:
            pytest.fail(
                "the install did not compile the hot modules (see pip's warning); on a machine "
                "without gcc and the Python headers, run the tests with "
                "RECONCILER_EXPECT_COMPILED=0"
            )
        pytest.skip("a pure-Python install: nothing compiled to check")
    shutil.copytree(
        compiled.PACKAGE, tmp_path / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def probe(root: Path, **env: str) -> tuple[str, str, int, int]:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    environment.pop("RECONCILER_COMPILED", None)
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=environment,
        cwd=root,
        check=True,
    )
    mode, path, message_id, code = json.loads(result.stdout)
    assert Path(path).parent == root / "reconciler"  # the copy, not the installed package
    return mode, path, message_id, code


def test_this_run_uses_what_the_install_and_the_environment_say() -> None:
    names = compiled.compiled_modules()
    assert names or not EXPECTED, "the install did not compile the hot modules"
    changed = compiled.stale(names) if names else []
    if not names:
        expected = "pure Python"
    elif os.environ.get("RECONCILER_COMPILED") == "0":
        expected = "pure Python (RECONCILER_COMPILED=0)"
    elif changed:  # a developer's edit since the install: never while EXPECTED (just built)
        assert not EXPECTED, f"sources changed while the tests ran: {changed}"
        expected = f"pure Python (changed since the install compiled them: {', '.join(changed)})"
    else:
        expected = f"compiled with mypyc ({len(names)} modules)"
    assert expected == reconciler.COMPILED
    suffix = ".so" if expected.startswith("compiled") else ".py"
    assert str(reconciler.ldapwire.__file__).endswith(suffix)


def test_an_intact_install_runs_compiled(package_copy: Path) -> None:
    mode, path, message_id, code = probe(package_copy)
    assert mode.startswith("compiled with mypyc")
    assert path.endswith(".so")
    assert (message_id, code) == (2, 0)


def test_an_edited_source_runs_every_compiled_module_as_python(package_copy: Path) -> None:
    mapping = package_copy / "reconciler" / "mapping.py"
    mapping.write_text(mapping.read_text() + "\n# edited after the install\n")

    mode, path, message_id, code = probe(package_copy)

    assert mode == "pure Python (changed since the install compiled them: reconciler.mapping)"
    assert path.endswith("ldapwire.py")  # not edited, but compiled with mapping: Python too
    assert (message_id, code) == (2, 0)


def test_a_missing_record_of_what_was_compiled_runs_python(package_copy: Path) -> None:
    (package_copy / "reconciler" / "_compiled.json").unlink()

    mode, path, _, _ = probe(package_copy)

    assert mode.startswith("pure Python (changed since the install compiled them: ")
    assert path.endswith("ldapwire.py")


@pytest.mark.parametrize("record", ["{not json", '["not", "a", "mapping"]'])
def test_an_unreadable_record_runs_python(package_copy: Path, record: str) -> None:
    (package_copy / "reconciler" / "_compiled.json").write_text(record)

    mode, path, _, _ = probe(package_copy)

    assert mode.startswith("pure Python (changed since")
    assert path.endswith("ldapwire.py")


def test_reconciler_compiled_0_runs_python(package_copy: Path) -> None:
    mode, path, message_id, code = probe(package_copy, RECONCILER_COMPILED="0")

    assert mode == "pure Python (RECONCILER_COMPILED=0)"
    assert path.endswith("ldapwire.py")
    assert (message_id, code) == (2, 0)


def test_a_package_without_compiled_modules_is_pure_python(package_copy: Path) -> None:
    for path in (package_copy / "reconciler").glob("*.so"):
        path.unlink()

    mode, path, _, _ = probe(package_copy)

    assert mode == "pure Python"
    assert path.endswith("ldapwire.py")
