"""``cti demo`` as a subprocess for the end-to-end tests: started on free ports with its own
SQLite file, its printed address found, its output kept draining (it prints every call
event, and a full pipe would stall it), and stopped at the end."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cti.children import preexec


@contextmanager
def running_demo(
    tmp_path: Path, *, rate: float, speed: float, address: str
) -> Iterator[tuple[str, list[str]]]:
    """The first match of ``address`` (a regex with one group) in the demo's output, and the
    lines printed so far (they keep coming in)."""
    command = [
        sys.executable, "-m", "cti", "demo", "--web-port", "0", "--agi-port", "0",
        "--rate", str(rate), "--speed", str(speed),
        "--url", f"sqlite:///{tmp_path / 'demo.sqlite3'}",
    ]  # fmt: skip
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        preexec_fn=preexec(),
    ) as process:
        assert process.stdout is not None
        stdout = process.stdout
        lines: list[str] = []
        url = None
        try:
            for line in stdout:
                lines.append(line)
                found = re.search(address, line)
                if found:
                    url = found.group(1)
                    break
            assert url, "".join(lines)
            threading.Thread(target=lambda: lines.extend(stdout), daemon=True).start()
            yield url, lines
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
