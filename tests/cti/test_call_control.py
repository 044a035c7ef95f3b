"""Where a transfer goes and what is refused before anything reaches Asterisk
(:class:`cti.call_control.CallControls`); the actions themselves against the simulator are in
tests/screenpop/test_call_control_api.py."""

from __future__ import annotations

from typing import Any

import pytest

from cti.call_control import CallControls
from cti.calls import Leg
from cti.controls import ControlError
from cti.settings import AgentSettings, PbxSettings

AGENTS = (
    AgentSettings("Alice", members=("Alice", "Local/1001@agents/n", "PJSIP/1001")),
    AgentSettings("Zed", members=("Zed", "PJSIP/1999")),  # a device, no Local member
    AgentSettings("Nobody", members=("Nobody",)),  # a member name only
)
LEG = Leg("Local/1001@agents-0000000f;1", "Local/support@incoming-0000000e;2")


class NoPbx:
    """An AMI client nothing may reach: every refusal here happens before the action."""

    async def send_action(self, action: Any, **_: Any) -> Any:
        raise AssertionError(f"sent {action}")


def controls(pbx: PbxSettings | None = None, leg: Leg | None = LEG) -> CallControls:
    settings = pbx or PbxSettings(name="lab")
    return CallControls(
        {settings.name: NoPbx()},  # type: ignore[dict-item]  # never called
        [settings],
        AGENTS,
        lambda _pbx, _call, _agent: leg,
        lambda _pbx: ["sales", "support"],
    )


def test_a_queue_is_an_extension_of_the_queue_context() -> None:
    assert controls().destination("lab", "queue", "sales") == ("sales", "incoming")
    other = PbxSettings(name="lab", queue_context="from-cti")
    assert controls(other).destination("lab", "queue", " sales ") == ("sales", "from-cti")


def test_an_agent_is_dialled_at_its_local_member_unless_told_otherwise() -> None:
    assert controls().destination("lab", "agent", "Alice") == ("1001", "agents")
    told = PbxSettings(name="lab", agent_context="xfer-agents")
    assert controls(told).destination("lab", "agent", "Alice") == ("1001", "xfer-agents")
    assert controls(told).destination("lab", "agent", "Zed") == ("1999", "xfer-agents")


@pytest.mark.parametrize(
    ("kind", "target", "kind_of_error", "says"),
    [
        ("queue", "billing", "invalid", "no queue named 'billing'"),
        ("agent", "Mallory", "invalid", "not a configured agent"),
        ("agent", "Zed", "refused", "no extension to transfer to"),
        ("agent", "Nobody", "refused", "no extension to transfer to"),
        ("number", "+15550100", "refused", "number_context"),
        ("park", "701", "invalid", "one of queue, agent, number"),
        ("queue", "sales\r\nAction: Originate", "invalid", "nothing was sent"),
        ("queue", "", "invalid", "required"),
    ],
)
def test_targets_refused_before_anything_is_sent(
    kind: str, target: str, kind_of_error: str, says: str
) -> None:
    with pytest.raises(ControlError) as caught:
        controls().destination("lab", kind, target)
    assert caught.value.kind == kind_of_error
    assert says in caught.value.message
    assert caught.value.sent == ()


def test_numbers_only_where_a_context_for_them_is_set() -> None:
    dialling = controls(PbxSettings(name="lab", number_context="outbound"))
    assert dialling.destination("lab", "number", "+8613800138000") == (
        "+8613800138000",
        "outbound",
    )
    for bad in ("555 0100", "5550100;1", "1" * 33, "+", "x100"):
        with pytest.raises(ControlError, match="a number"):
            dialling.destination("lab", "number", bad)


async def test_no_leg_no_action() -> None:
    """The agent is not talking on the call (ringing, wrap-up, gone): refused, nothing sent."""
    off_call = controls(leg=None)
    for act in (
        off_call.hangup("lab", "c1", "Alice"),
        off_call.blind_transfer("lab", "c1", "Alice", "queue", "sales"),
    ):
        with pytest.raises(ControlError, match="Alice is not talking on this call now") as caught:
            await act
        assert caught.value.kind == "refused"
    with pytest.raises(ControlError, match="no PBX named 'elsewhere'"):
        await controls().hangup("elsewhere", "c1", "Alice")
