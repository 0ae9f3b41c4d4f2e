"""The build hook (hatch_build.py): an install that cannot compile is a pure-Python install.

(Every install through scripts/test.sh is the hook's success path: test_compiled.py checks
what it built.)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hatch_build  # noqa: E402


def project_copy(tmp_path: Path) -> Path:
    """The project's sources and settings, as a build sees them."""
    root = tmp_path / "project"
    shutil.copytree(
        ROOT / "reconciler", root / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def run_hook(root: Path, version: str) -> tuple[dict[str, Any], str, hatch_build.CompileHook]:
    """The hook's build data, what it told the user, and the hook (to finalize)."""
    hook = hatch_build.CompileHook(str(root), {}, None, None, str(root / "dist"), "wheel")
    told: list[str] = []
    hook.app.display_info = told.append
    hook.app.display_warning = told.append
    build_data: dict[str, Any] = {"force_include": {}}
    hook.initialize(version, build_data)
    return build_data, "\n".join(told), hook


def test_without_a_working_compiler_the_install_is_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project_copy(tmp_path)
    left_over = root / "reconciler" / "ldapwire.cpython-311-x86_64-linux-gnu.so"
    left_over.write_bytes(b"an old build")  # from an install before this one
    (root / hatch_build.DIGESTS).write_text("{}")
    monkeypatch.setenv("CC", "/bin/false")  # gcc "fails" on the first module
    monkeypatch.delenv("RECONCILER_COMPILE", raising=False)

    build_data, told, _hook = run_hook(root, "editable")

    assert "compiling with mypyc failed (CompileError: command '/bin/false' failed" in told
    assert "installing pure Python" in told
    assert build_data == {"force_include": {}}  # pure_python not turned off, nothing added
    assert not left_over.exists()  # an old build never outlives a failed one
    assert not (root / hatch_build.DIGESTS).exists()
    assert not list((root / "reconciler").glob("*.so"))


def test_a_mypyc_error_is_a_pure_python_install_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exits(root: Path, scratch: Path) -> list[str]:
        raise SystemExit("reconciler/mapping.py:1: error: …")  # what mypycify does

    monkeypatch.setattr(hatch_build, "compile_modules", exits)
    monkeypatch.delenv("RECONCILER_COMPILE", raising=False)

    build_data, told, _hook = run_hook(project_copy(tmp_path), "standard")

    assert "compiling with mypyc failed (SystemExit: reconciler/mapping.py:1: error" in told
    assert build_data == {"force_include": {}}


def test_reconciler_compile_0_asks_for_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(root: Path, scratch: Path) -> list[str]:
        raise AssertionError("compiled although RECONCILER_COMPILE=0")

    monkeypatch.setattr(hatch_build, "compile_modules", never)
    monkeypatch.setenv("RECONCILER_COMPILE", "0")

    build_data, told, _hook = run_hook(project_copy(tmp_path), "standard")

    assert told == "RECONCILER_COMPILE=0: installing pure Python"
    assert build_data == {"force_include": {}}


def test_a_wheel_carries_what_was_compiled_with_the_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def compiled(root: Path, scratch: Path) -> list[str]:
        (scratch / "lib" / "reconciler").mkdir(parents=True)
        for name in ("ldapwire.cpython-311-x86_64-linux-gnu.so", "_compiled.json"):
            (scratch / "lib" / "reconciler" / name).write_text("built")
        return ["reconciler/_compiled.json", "reconciler/ldapwire.cpython-311-x86_64-linux-gnu.so"]

    monkeypatch.setattr(hatch_build, "compile_modules", compiled)
    monkeypatch.delenv("RECONCILER_COMPILE", raising=False)

    build_data, told, hook = run_hook(project_copy(tmp_path), "standard")

    assert build_data["pure_python"] is False and build_data["infer_tag"] is True
    included = build_data["force_include"]
    assert sorted(included.values()) == [
        "reconciler/_compiled.json",
        "reconciler/ldapwire.cpython-311-x86_64-linux-gnu.so",
    ]
    assert all(Path(source).read_text() == "built" for source in included)
    assert told == f"compiled {len(hatch_build.COMPILED)} modules with mypyc"
    scratch = Path(next(iter(included))).parents[2]
    assert scratch.name.startswith("reconciler-mypyc-")
    hook.finalize("standard", build_data, str(tmp_path / "reconciler.whl"))  # the wheel is built
    assert not scratch.exists()
