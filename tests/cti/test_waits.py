"""A timed wait never eats the cancel of the task that waits (Python 3.11's wait_for does)."""

from __future__ import annotations

import asyncio

import pytest

from cti.waits import wait_set


async def test_a_cancel_in_the_turn_the_event_is_set_still_cancels() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_set(event, 10.0))
    await asyncio.sleep(0)  # waiting now
    event.set()
    assert waiter.cancel()  # not finished yet: the cancel must win
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_it_says_whether_the_event_came_or_the_time_ran_out() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 0.01) is True
