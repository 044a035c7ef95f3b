"""Child processes that die with their parent: a benchmark or test run that is killed (even
with SIGKILL, where no ``finally`` runs) must not leave a product, a receiver or a spinning
FastAGI handler behind to hold a core for hours."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies. Call it in the child: as
    ``preexec_fn`` of a subprocess, or first thing in a multiprocessing target. ``parent`` is
    the pid the child expects (a parent that died before the request was made is caught
    here, since the kernel would then never send the signal). Elsewhere than Linux it does
    nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def preexec() -> Callable[[], None]:
    """A ``preexec_fn`` for a subprocess started now: it dies with this process. The kernel
    sends the signal when the forking *thread* ends, so start children from the main thread
    or from a thread that waits for them (``subprocess.run`` in ``asyncio.to_thread``)."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)
