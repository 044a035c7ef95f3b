"""The shipped menus end to end: the simulated Asterisk (ivr.client) calls our FastAGI server,
the walk runs on the real store (SQLite and PostgreSQL), the findings reach the sink.

Every path a caller can take through config/ivr/main.toml and survey.toml is driven by what
the caller presses; hang-ups are tried at every command of a long path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.models import CallScore, Interaction
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore, StoreUnavailable
from ivr.client import TIMEOUT, AgiCall, AgiTranscript, CallerScript, run_agi
from ivr.menus import Figure, load_menus
from ivr.runner import MenuHandler, MenuStore, pbx_from_query
from ivr.server import AgiServer
from ivr.store import IvrStore
from ivr.walk import CustomerInfo, FigureValue
from tests.ivr.test_ivr_store import NOW, add

MENUS = load_menus(Path(__file__).parent.parent.parent / "config" / "ivr")
KNOWN = "+8613800138000"  # Wei, regular, zh, balance 42.50 CNY, PIN 2468
VIP_NUMBER = "+8613900139000"  # Acme, vip, lapsed, owner bob
T = TypeVar("T")


@dataclass
class Sink:
    """The pop's side: every report, in order."""

    reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def ivr_learned(self, pbx: str, call_id: str, findings: dict[str, Any]) -> None:
        self.reports.append((pbx, call_id, findings))

    @property
    def last(self) -> dict[str, Any]:
        return self.reports[-1][2]


@dataclass
class Ivr:
    port: int
    sink: Sink
    engine: AsyncEngine
    wei: int
    acme: int
    store: IvrStore
    counter: int = 0

    async def call(
        self, caller: CallerScript, *, number: str | None = KNOWN, menu: str = "main"
    ) -> AgiTranscript:
        self.counter += 1
        call = AgiCall(
            channel=f"Local/s@incoming-{self.counter:08x};2",
            uniqueid=f"lab-1.{2 * self.counter}",
            linkedid=f"lab-1.{2 * self.counter - 1}",
            callerid_num=number,
            script=menu,
        )
        async with asyncio.timeout(10):
            return await run_agi("127.0.0.1", self.port, call, caller)

    def call_id(self) -> str:
        return f"lab-1.{2 * self.counter - 1}"


class Slow:
    """The real store, each answer held back ``delay`` seconds (a database under load)."""

    def __init__(self, store: IvrStore, delay: float) -> None:
        self.store, self.delay = store, delay

    async def _later(self, work: Callable[[], Awaitable[T]]) -> T:
        await asyncio.sleep(self.delay)
        return await work()

    async def find_by_phone(self, number: str) -> tuple[CustomerInfo, ...]:
        return await self._later(lambda: self.store.find_by_phone(number))

    async def find_by_account(self, account: str) -> tuple[CustomerInfo, ...]:
        return await self._later(lambda: self.store.find_by_account(account))

    async def verify_pin(self, customer_id: int, pin: str) -> bool:
        return await self._later(lambda: self.store.verify_pin(customer_id, pin))

    async def figure(self, figure: Figure, customer_id: int) -> FigureValue:
        return await self._later(lambda: self.store.figure(figure, customer_id))

    async def request_callback(
        self, queue: str, number: str, customer_id: int | None, call_id: str | None
    ) -> str:
        return await self._later(
            lambda: self.store.request_callback(queue, number, customer_id, call_id)
        )

    async def save_survey(self, *args: Any) -> None:
        await self._later(lambda: self.store.save_survey(*args))


async def seed(engine: AsyncEngine) -> tuple[int, int]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        wei = await add(
            session, "张伟", [KNOWN], language="zh", balance=Decimal("42.50"), currency="CNY"
        )
        acme = await add(
            session, "Acme <b>Ltd</b>", [VIP_NUMBER], kind="company", tier="vip",
            lifecycle="lapsed", owner="bob",
        )  # fmt: skip
        session.add(
            Interaction(
                customer_id=wei, kind="order", occurred_at=NOW, title="order", status="shipped"
            )
        )
    return wei, acme


async def serve(
    engine: AsyncEngine, wrap: Callable[[IvrStore], MenuStore] = lambda store: store
) -> AsyncIterator[Ivr]:
    phones = PhoneNormalizer("CN")
    customers = CustomerStore(engine, phones)
    store = IvrStore(engine, customers, phones, clock=lambda: NOW)
    wei, acme = await seed(engine)
    await store.set_pin(wei, "2468")
    await store.set_pin(acme, "1357")
    sink = Sink()
    server = AgiServer(hangup_grace=0.05)
    for name, menu in MENUS.items():
        handler = MenuHandler(
            menu,
            wrap(store),
            sink,
            pbx_for=pbx_from_query("lab", frozenset({"lab"})),
            agent_for=lambda pbx, call: "alice",
            store_limit=1.0,
        )
        server.add_route(name, handler)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield Ivr(port, sink, engine, wei, acme, store)
    finally:
        await server.stop()
        await customers.close()


@pytest.fixture
async def ivr(engine: AsyncEngine) -> AsyncIterator[Ivr]:
    async for running in serve(engine):
        yield running


def route(transcript: AgiTranscript) -> tuple[str | None, str | None, str | None, str | None]:
    v = transcript.variables
    return v.get("IVR_QUEUE"), v.get("QUEUE_PRIO"), v.get("IVR_OWNER"), v.get("IVR_WINBACK")


async def test_a_known_caller_hears_the_balance_in_their_language_then_is_routed(
    ivr: Ivr,
) -> None:
    transcript = await ivr.call(CallerScript([TIMEOUT, "2", "3"]))
    assert transcript.variables["CHANNEL(language)"] == "zh"
    balance = transcript.commands.index('STREAM FILE ivr/zh/balance-is ""')
    assert transcript.commands[balance + 1 : balance + 5] == [
        'SAY NUMBER 42 ""',
        'STREAM FILE ivr/point ""',
        'SAY DIGITS 5 ""',
        'STREAM FILE ivr/currency-cny ""',
    ]
    assert route(transcript) == ("support", "0", "", "")
    pbx, call_id, findings = ivr.sink.reports[-1]
    assert (pbx, call_id) == ("lab", ivr.call_id())  # the linkedid, not the ;2 uniqueid
    assert findings["identified_by"] == "caller_id" and findings["customer_id"] == ivr.wei
    assert findings["path"] == [
        ["welcome", "played"],
        ["identify", "caller_id"],
        ["main", "2"],
        ["balance", "said"],
        ["main", "3"],
        ["support", "routed"],
    ]
    assert findings["language"] == "zh" and not findings["hung_up"]


async def test_a_vip_lapsed_customer_gets_priority_the_owner_and_a_winback_flag(ivr: Ivr) -> None:
    transcript = await ivr.call(CallerScript([TIMEOUT, "0"]), number=VIP_NUMBER)
    assert route(transcript) == ("support", "10", "bob", "1")
    assert transcript.variables["IVR_CUSTOMER"] == str(ivr.acme)
    assert ivr.sink.last["route"] == {
        "queue": "support", "priority": 10, "owner": "bob", "winback": True
    }  # fmt: skip


async def test_an_unknown_number_types_the_customer_number_and_pin(ivr: Ivr) -> None:
    caller = CallerScript([TIMEOUT, "99999#", f"{ivr.wei}#", "1111#", "2468#", "1", "0"])
    transcript = await ivr.call(caller, number="+8613111111111")
    findings = ivr.sink.last
    assert findings["identified_by"] == "account" and findings["customer_id"] == ivr.wei
    assert ["identify", "account-unknown"] in findings["path"]  # 99999 is nobody
    assert ["identify", "pin-wrong"] in findings["path"]
    assert "SAY NUMBER" not in " ".join(transcript.commands)  # order status is a sound
    assert 'STREAM FILE ivr/order-shipped ""' in transcript.commands
    assert route(transcript)[0] == "support"


async def test_letters_and_too_many_digits_are_invalid_input_not_errors(ivr: Ivr) -> None:
    caller = CallerScript([TIMEOUT, "12345678901234#", "0"])
    await ivr.call(caller, number=None)  # withheld number: asked at once
    findings = ivr.sink.last
    assert findings["identified_by"] == "none"
    assert findings["route"]["queue"] == "support"
    assert findings["path"][-1] == ["agent", "routed"]


async def test_a_callback_is_a_followup_owned_by_the_queue(ivr: Ivr) -> None:
    transcript = await ivr.call(CallerScript([TIMEOUT, "9"]))
    findings = ivr.sink.last
    assert findings["callback"] is not None and route(transcript)[0] is None
    assert transcript.caller_hung_up is False and transcript.agi_status == "HANGUP"
    async with ivr.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Interaction.owner, Interaction.status, Interaction.call_id).where(
                    Interaction.kind == "followup"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [("queue:support", "open", ivr.call_id())]


@pytest.mark.parametrize("after", range(0, 12))
async def test_a_hang_up_at_any_point_ends_cleanly_and_keeps_what_was_learned(
    ivr: Ivr, after: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caller = CallerScript([TIMEOUT, "2", "1", "0"], hangup_after=after)
    transcript = await ivr.call(caller)
    assert transcript.caller_hung_up or route(transcript)[0] == "support"
    findings = ivr.sink.last
    if transcript.caller_hung_up:
        assert findings["hung_up"] and findings["path"][-1][1] == "hung-up"
        assert route(transcript)[0] is None  # no half-written routing
    if after > 2:  # the caller-ID lookup had run: the caller stays identified
        assert findings["customer_id"] == ivr.wei
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_the_survey_scores_reach_the_call_record_with_the_agent(ivr: Ivr) -> None:
    await ivr.call(CallerScript(["4", "1"]), menu="survey")
    assert ivr.sink.last["scores"] == {"attitude": 4, "solved": 1}
    assert await ivr.store.scores_for("lab", ivr.call_id()) == {"attitude": 4, "solved": 1}
    async with ivr.engine.connect() as connection:
        agents = (await connection.scalars(select(CallScore.agent))).all()
    assert agents == ["alice", "alice"]


async def test_a_survey_hung_up_after_one_answer_keeps_that_score(ivr: Ivr) -> None:
    await ivr.call(CallerScript(["5"], hangup_on="GET DATA"), menu="survey")
    assert await ivr.store.scores_for("lab", ivr.call_id()) == {}  # hung up at the 1st question
    await ivr.call(CallerScript(["5", "2"], hangup_after=2), menu="survey")
    assert await ivr.store.scores_for("lab", ivr.call_id()) == {"attitude": 5}


async def test_a_slow_store_plays_the_holding_prompt_then_takes_the_error_path(
    engine: AsyncEngine,
) -> None:
    async for slow in serve(engine, lambda store: Slow(store, 3.0)):
        transcript = await slow.call(CallerScript([TIMEOUT, "0"]))
        assert 'STREAM FILE ivr/en/one-moment ""' in transcript.commands
        assert slow.sink.last["path"] == [
            ["welcome", "played"],
            ["identify", "store-timeout"],
            ["agent", "routed"],  # not_found: a person takes the call
        ]
        assert route(transcript)[0] == "support"


class Broken:
    """A store whose database is gone: every call says so, as IvrStore does."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def fail(*args: Any) -> Any:
            raise StoreUnavailable("connection refused")

        return fail


async def test_a_store_that_fails_puts_the_caller_through_to_an_agent(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    async for broken in serve(engine, lambda store: Broken()):  # type: ignore[arg-type,return-value]
        transcript = await broken.call(CallerScript([TIMEOUT]))
        assert route(transcript) == ("support", "0", "", "")
        assert broken.sink.last["identified_by"] == "none"
    assert "store unavailable" in caplog.text
