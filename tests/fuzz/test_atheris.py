"""Runs each coverage-guided target of tests/fuzz/targets.py for ``FUZZ_RUNS`` inputs.

Each target is a subprocess (libFuzzer owns its process: it exits on the first crash), seeded
with a copy of its corpus folder in the temp dir, so nothing is written into the repo; a crash
leaves its input there too, and the test prints where. Under ``CI`` libFuzzer's seed is fixed,
so a CI run tries the same inputs every time. The number of inputs run is printed in the
"fuzz cases" summary at the end of the run (tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent.parent
CORPUS = REPO / "tests" / "fixtures" / "fuzz"
FUZZ_RUNS = int(os.environ.get("FUZZ_RUNS", "4000"))  # about 20 s for the three on one core
MAX_LEN = 8192
SEEDS = {
    "ami": ["ami/*.bin"],
    "agi_headers": ["agi/*headers*.bin"],
    "agi_replies": ["agi/*replies*.bin"],
}


def fuzz(target: str, corpus: Path, runs: int, *flags: str) -> tuple[int, str]:
    """Run ``target`` over ``corpus`` (where libFuzzer adds what it finds); exit code, output."""
    seed = "1" if os.environ.get("CI") else "0"  # 0: libFuzzer picks one
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.targets",
        target,
        f"-runs={runs}",
        f"-max_len={MAX_LEN}",
        f"-seed={seed}",
        "-timeout=20",
        "-print_final_stats=1",
        f"-artifact_prefix={corpus.parent}/crash-",
        *flags,
        str(corpus),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, errors="replace", timeout=300
    )
    return done.returncode, done.stdout + done.stderr


def executed(output: str) -> int:
    found = re.search(r"stat::number_of_executed_units: (\d+)", output)
    assert found, output[-2000:]
    return int(found[1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", sorted(SEEDS))
def test_target_survives_its_runs(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """FUZZ_RUNS (default 4000) inputs, from the corpus and libFuzzer's mutations of it: exit 0
    (an exception or a broken property is a crash: its input is shown and kept in tmp_path)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for pattern in SEEDS[target]:
        for path in CORPUS.glob(pattern):
            shutil.copy(path, corpus)
    assert any(corpus.iterdir())
    code, output = fuzz(target, corpus, FUZZ_RUNS)
    crashes = sorted(tmp_path.glob("crash-*"))
    assert code == 0 and not crashes, (
        f"{target} crashed; keep the input as a regression_* corpus file: "
        f"{[(p, p.read_bytes()[:200]) for p in crashes]}\n{output[-4000:]}"
    )
    runs = executed(output)
    assert runs == FUZZ_RUNS
    request.node.user_properties.append(("fuzz cases", (runs, "atheris inputs")))


def test_a_crash_fails_the_run_and_keeps_its_input(tmp_path: Path) -> None:
    """The harness sees a failure: a decoder fed to a property that cannot hold (the canary
    target raises on its seed) exits non-zero and leaves the input in the temp dir."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(b"canary")
    code, output = fuzz("canary", corpus, 10)
    assert code != 0, output[-2000:]
    (crash,) = tmp_path.glob("crash-*")
    assert crash.read_bytes() == b"canary"
