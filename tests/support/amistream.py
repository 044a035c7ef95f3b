"""Builds hand-made AMI streams in the shape real Asterisk 22 sends (header order, snapshot
blocks, Privilege, Timestamp, SystemName), for sequences the shared captures do not contain.

Shapes follow shared/reference/asterisk-ami.md (§1.1 snapshot block, §2.5 queue exits,
§2.6 transfers, §3 snapshot actions); they were not recorded on a real PBX.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cti.codec import encode, escape

PRIVILEGE = {
    "Newchannel": "call",
    "Newstate": "call",
    "NewCallerid": "call",
    "NewConnectedLine": "call",
    "Hangup": "call",
    "HangupRequest": "call",
    "SoftHangupRequest": "call",
    "DialBegin": "call",
    "DialEnd": "call",
    "BridgeCreate": "call",
    "BridgeEnter": "call",
    "BridgeLeave": "call",
    "BridgeDestroy": "call",
    "BlindTransfer": "call",
    "AttendedTransfer": "call",
    "Hold": "call",
    "VarSet": "dialplan",
    "Newexten": "dialplan",
    "FullyBooted": "system",
}


@dataclass(frozen=True)
class Chan:
    name: str
    uid: str
    linked: str
    num: str = "<unknown>"
    cid: str = "<unknown>"
    state: str = "Up"
    context: str = "from-pstn"
    exten: str = "s"

    def snap(self, prefix: str = "") -> dict[str, str]:
        codes = {"Down": "0", "Ring": "4", "Ringing": "5", "Up": "6"}
        fields = {
            "Channel": self.name,
            "ChannelState": codes[self.state],
            "ChannelStateDesc": self.state,
            "CallerIDNum": self.num,
            "CallerIDName": escape(self.cid) if self.cid != "<unknown>" else self.cid,
            "ConnectedLineNum": "<unknown>",
            "ConnectedLineName": "<unknown>",
            "Language": "en",
            "AccountCode": "",
            "Context": self.context,
            "Exten": self.exten,
            "Priority": "1",
            "Uniqueid": self.uid,
            "Linkedid": self.linked,
        }
        return {prefix + k: v for k, v in fields.items()}

    def but(self, **changes: str) -> Chan:
        return replace(self, **changes)


class Stream:
    """An ordered list of AMI messages with increasing Timestamps."""

    def __init__(self, t0: float = 1795420000.0, system: str = "lab") -> None:
        self.now = t0
        self.system = system
        self.messages: list[dict[str, str]] = []

    def ev(self, name: str, *blocks: dict[str, str], dt: float = 0.001, **fields: str) -> None:
        self.now += dt
        message = {
            "Event": name,
            "Privilege": PRIVILEGE.get(name, "agent") + ",all",
            "Timestamp": f"{self.now:.6f}",
            "SystemName": self.system,
        }
        for block in blocks:
            message.update(block)
        message.update(fields)
        self.messages.append(message)

    def raw(self, **fields: str) -> None:
        """A message without Timestamp (responses and snapshot list items)."""
        self.messages.append(dict(fields))

    def to_bytes(self) -> bytes:
        return b"".join(encode(m) for m in self.messages)

    # common sequences ------------------------------------------------------------------

    def queue_call_answered(
        self, caller: Chan, agent_leg: Chan, queue: str, member: str, interface: str, bridge: str
    ) -> None:
        """Join, ring one member, answer, bridge: the order of capture_10calls."""
        self.ev("Newchannel", caller.but(state="Ring").snap())
        self.ev("Newstate", caller.snap())
        self.ev("QueueCallerJoin", caller.snap(), Queue=queue, Position="1", Count="1")
        self.ring(caller, agent_leg, queue, member, interface)
        self.ev("DialEnd", caller.snap(), agent_leg.snap("Dest"), DialStatus="ANSWER")
        self.ev("QueueCallerLeave", caller.snap(), Queue=queue, Position="1", Count="0")
        self.connect(caller, agent_leg, queue, member, interface, hold="3")
        self.ev("BridgeCreate", BridgeUniqueid=bridge, BridgeType="basic")
        self.ev("BridgeEnter", agent_leg.snap(), BridgeUniqueid=bridge)
        self.ev("BridgeEnter", caller.snap(), BridgeUniqueid=bridge)

    def connect(
        self, caller: Chan, leg: Chan, queue: str, member: str, interface: str, hold: str
    ) -> None:
        self.ev(
            "AgentConnect",
            caller.snap(),
            leg.snap("Dest"),
            Queue=queue,
            Interface=interface,
            MemberName=member,
            HoldTime=hold,
            RingTime=hold,
        )

    def complete(
        self, caller: Chan, leg: Chan, queue: str, member: str, interface: str, talk: str, **kw: str
    ) -> None:
        """AgentComplete; ``kw`` gives HoldTime (default 3) and Reason (default caller)."""
        self.ev(
            "AgentComplete",
            caller.snap(),
            leg.snap("Dest"),
            Queue=queue,
            Interface=interface,
            MemberName=member,
            HoldTime=kw.get("HoldTime", "3"),
            TalkTime=talk,
            Reason=kw.get("Reason", "caller"),
        )

    def ring(self, caller: Chan, leg: Chan, queue: str, member: str, interface: str) -> None:
        self.ev("Newchannel", leg.but(state="Down").snap())
        self.ev(
            "AgentCalled",
            caller.snap(),
            leg.but(state="Down").snap("Dest"),
            Queue=queue,
            Interface=interface,
            MemberName=member,
        )
        self.ev(
            "DialBegin", caller.snap(), leg.but(state="Down").snap("Dest"), DialString=interface
        )

    def hangup(
        self, chan: Chan, request: str = "HangupRequest", cause: str = "16", dt: float = 0.001
    ) -> None:
        if request:
            self.ev(request, chan.snap(), Cause=cause, dt=dt)
            dt = 0.001
        self.ev("Hangup", chan.snap(), Cause=cause, dt=dt, **{"Cause-txt": "Normal Clearing"})
