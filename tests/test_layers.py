"""The layer rules of docs/architecture.md are code (import-linter, run by ``make lint``):
they hold on the tree, and an import that runs back up breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cti.children import preexec

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cti", "crm_sync", "ivr", "screenpop", "pbxsim", "cti_bench", "cti_app")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts on the packages found in ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec(),
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("*.pyc"))
    return copy


def test_the_tree_keeps_every_contract() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the core reaching the store
        ("cti/codec.py", "from crm_sync.db import create_engine", "cti is not allowed to import"),
        # the store reaching the web layer
        ("crm_sync/phones.py", "import screenpop.hub", "crm_sync is not allowed to import"),
        # the IVR and the web layer are siblings
        ("ivr/walk.py", "from screenpop import errors", "ivr is not allowed to import"),
        # the simulator plays the PBX: no store
        ("pbxsim/scenarios.py", "import crm_sync.models", "pbxsim is not allowed to import"),
        # a circle inside a package
        ("screenpop/keys.py", "from screenpop import wallboard", "No import circles"),
    ],
)
def test_an_import_back_up_breaks_a_contract(
    tree: Path, module: str, line: str, broken: str
) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(f"{original}\n{line}  # noqa\n")
    try:
        done = lint(tree)
    finally:
        path.write_text(original)
    assert done.returncode == 1, done.stdout + done.stderr
    assert broken in done.stdout
