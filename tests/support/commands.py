"""The ``cti`` command in a subprocess, as a user runs it: without the caller's database or
config in the environment, and dying with the test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cti.children import preexec

ROOT = Path(__file__).resolve().parent.parent.parent


def cti(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CTI_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "cti", *args],
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(ROOT), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec(),
    )
