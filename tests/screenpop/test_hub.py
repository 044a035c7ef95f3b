"""The replay buffer: bounded by count and by age, so a resume gets what it missed or a snapshot."""

import json

from screenpop.hub import BUFFER, REPLAY_SECONDS, Hub


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _seqs(items: list[tuple[int, str]] | None) -> list[int] | None:
    if items is None:
        return None
    for seq, text in items:
        assert json.loads(text)["seq"] == seq
    return [seq for seq, _ in items]


def test_a_recent_gap_is_replayed_in_order() -> None:
    ticks = Ticks()
    hub = Hub(ticks)
    for n in range(5):
        hub.publish("a1", {"type": "card", "n": n})
        ticks.now += 1.0
    assert _seqs(hub.since("a1", 2)) == [3, 4, 5]
    assert hub.since("a1", 5) == []


def test_messages_older_than_the_replay_window_are_not_replayed() -> None:
    ticks = Ticks()
    hub = Hub(ticks)
    hub.publish("a1", {"type": "card", "n": 1})
    hub.publish("a1", {"type": "card", "n": 2})
    ticks.now += REPLAY_SECONDS + 1
    hub.publish("a1", {"type": "card", "n": 3})
    assert hub.since("a1", 0) is None  # 1 and 2 are gone: a snapshot instead
    assert _seqs(hub.since("a1", 2)) == [3]
    ticks.now += REPLAY_SECONDS + 1
    assert hub.since("a1", 2) is None  # nothing published since, and 3 has aged out
    assert hub.since("a1", 3) == []  # up to date: nothing to send, no snapshot needed


def test_the_buffer_never_holds_more_than_its_count() -> None:
    ticks = Ticks()
    hub = Hub(ticks)
    for n in range(BUFFER + 10):
        hub.publish("a1", {"type": "card", "n": n})
    assert hub.since("a1", 9) is None
    assert _seqs(hub.since("a1", 10)) == list(range(11, BUFFER + 11))


def test_one_agents_old_messages_do_not_age_anothers() -> None:
    ticks = Ticks()
    hub = Hub(ticks)
    hub.publish("a1", {"type": "card"})
    ticks.now += REPLAY_SECONDS - 1
    hub.publish("a2", {"type": "card"})
    ticks.now += 2
    assert hub.since("a1", 0) is None
    assert _seqs(hub.since("a2", 0)) == [1]
