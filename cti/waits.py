"""Waiting for an event with a time limit, without losing a cancel.

Python 3.11's ``asyncio.wait_for`` returns normally when its task is cancelled in the same loop
turn as the awaited thing finishes. A loop built on it (``while True: wait_for(wake.wait(), t)``)
then ignores the cancel and never stops: CI saw the outbox relay hang a test's teardown that way.
``asyncio.timeout`` counts cancels and does not have that race, so every timed wait here uses it.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
