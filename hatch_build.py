"""Build hook: the modules a plan spends its time in, compiled with mypyc when a C compiler
is at hand (wheels and editable installs alike).

The Python sources stay the package: each compiled module is the same file compiled, and
``reconciler.compiled`` loads the compiled ones only while every source is the one they were
built from (an edited checkout runs as Python until the next install). Without gcc and the
Python headers the build warns and installs pure Python; RECONCILER_COMPILE=0 asks for that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The read, the mapping, the diff and the plan's rendering: where a 100k-user plan spends
# its time. (Compiling them costs about 80 s of the install.)
COMPILED = (
    "reconciler/addresses.py",
    "reconciler/guards.py",
    "reconciler/ldap_source.py",
    "reconciler/ldapwire.py",
    "reconciler/mapping.py",
    "reconciler/plan.py",
    "reconciler/printable.py",
    "reconciler/recipient.py",
    "reconciler/renames.py",
    "reconciler/render.py",
    "reconciler/state.py",
)
# The build's own environment has none of the package's dependencies: mypy takes them as
# Any (the project's own mypy run checks them typed), and a cache of the build's own.
MYPY_OPTIONS = (
    "--ignore-missing-imports",
    "--no-warn-return-any",
    "--no-warn-unused-ignores",
    "--allow-subclassing-any",
)
# The shared library of the compiled modules, inside the package.
GROUP = "reconciler._native"
DIGESTS = "reconciler/_compiled.json"


def source_digests(root: Path) -> dict[str, str]:
    """Module name → SHA-256 of its source, as reconciler.compiled checks them."""
    return {
        path.removesuffix(".py").replace("/", "."): hashlib.sha256(
            (root / path).read_bytes()
        ).hexdigest()
        for path in COMPILED
    }


class CompileHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version == "editable":
            remove_built(root)  # an old build never outlives a failed one
        if os.environ.get("RECONCILER_COMPILE", "1").strip() == "0":
            self.app.display_info("RECONCILER_COMPILE=0: installing pure Python")
            return
        scratch = Path(tempfile.mkdtemp(prefix="reconciler-mypyc-"))
        try:
            built = compile_modules(root, scratch)
        except (Exception, SystemExit) as exc:  # no compiler, no headers, a mypyc error
            # (mypyc exits on the errors it finds): Python still works
            self.app.display_warning(
                f"compiling with mypyc failed ({type(exc).__name__}: {exc}); installing "
                "pure Python, which is slower (gcc and the Python headers are needed)"
            )
            shutil.rmtree(scratch, ignore_errors=True)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version == "editable":
            # The editable install imports the package from this tree: the compiled modules
            # go beside their sources (git ignores them).
            for relative in built:
                shutil.copy2(scratch / "lib" / relative, root / relative)
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            for relative in built:
                build_data["force_include"][str(scratch / "lib" / relative)] = relative
            self._scratch = scratch  # removed once the wheel holds them (finalize)
        self.app.display_info(f"compiled {len(COMPILED)} modules with mypyc")

    _scratch: Path | None = None

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def compile_modules(root: Path, scratch: Path) -> list[str]:
    """Compile COMPILED into scratch/lib; the files to install, relative to the root (the
    digests of the sources compiled included)."""
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    digests = source_digests(root)
    cwd = Path.cwd()
    os.chdir(root)  # mypycify takes the paths, and mypy its settings, from the project root
    try:
        extensions = mypycify(
            [*COMPILED, *MYPY_OPTIONS, f"--cache-dir={scratch / 'mypy-cache'}"],
            opt_level="3",
            group_name=GROUP,
            target_dir=str(scratch / "c"),
        )
        command = build_ext(Distribution({"name": "reconciler", "ext_modules": extensions}))
        command.build_lib, command.build_temp = str(scratch / "lib"), str(scratch / "temp")
        command.ensure_finalized()
        command.run()
    finally:
        os.chdir(cwd)
    if source_digests(root) != digests:
        raise RuntimeError("the sources changed while they were compiled")
    lib = scratch / "lib"
    (lib / DIGESTS).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return sorted(str(path.relative_to(lib)) for path in lib.rglob("*") if path.is_file())


def remove_built(root: Path) -> None:
    for path in (root / "reconciler").glob("*.so"):
        path.unlink()
    (root / DIGESTS).unlink(missing_ok=True)
