"""PbxLinks: what the agents' pages are told of PBXs that are down (issue 21)."""

from __future__ import annotations

import json

from cti.events import FeedStatus, MemberRemoved
from screenpop.hub import Hub
from screenpop.links import PbxLinks


def told(hub: Hub, agent: str) -> list[list[dict[str, object]]]:
    return [json.loads(text)["down"] for _, text in hub.since(agent, 0) or []]


def test_each_change_reaches_every_agent_once() -> None:
    hub = Hub()
    for agent in ("alice", "bob"):
        hub.subscribe(agent)
    links = PbxLinks(hub)
    links.observe(FeedStatus("paris", 100.0, False, "connection refused"))
    links.observe(FeedStatus("paris", 130.0, False, "connection refused"))  # the same: quiet
    links.observe(FeedStatus("paris", 160.0, False, "no AMI banner"))  # why changed: told
    links.observe(FeedStatus("paris", 190.0, True))
    links.observe(FeedStatus("paris", 220.0, True))  # up again: nothing new
    gone = MemberRemoved("paris", 230.0, "support", "alice", "Local/1001@agents/n")
    links.observe(gone)  # not a link's state: nothing to tell
    expected = [
        [{"name": "paris", "since": 100.0, "reason": "connection refused"}],
        [{"name": "paris", "since": 100.0, "reason": "no AMI banner"}],  # down since the first
        [],
    ]
    assert told(hub, "alice") == told(hub, "bob") == expected
    assert links.down() == []
