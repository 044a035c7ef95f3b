"""The IVR's store operations on SQLite and PostgreSQL: lookups, PINs, figures, callbacks,
surveys, failures of the database, the 0002 migration and ``cti db set-pin``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import func, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from crm_sync.customers import CustomerError
from crm_sync.db import create_engine
from crm_sync.migrate import alembic_config, upgrade
from crm_sync.models import CallScore, Customer, Interaction, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore, StoreUnavailable
from cti_app.seed import seed_demo
from ivr.store import CALLBACK_TITLE, IvrStore
from ivr.walk import CustomerInfo, FigureValue, speech
from tests.conftest import PG_URL
from tests.support.commands import cti

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")
ROOT = Path(__file__).parent.parent.parent
HOSTILE = "<script>alert('x')</script> \"O'Brien\" 😀"


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Stored:
    ivr: IvrStore
    clock: Clock
    wei: int  # person, zh, with a phone shared by nobody
    acme: int  # company, vip, owner bob
    twin_a: int  # two persons on one number
    twin_b: int


async def add(session: AsyncSession, name: str, phones: list[str], **fields: Any) -> int:
    customer = Customer(
        kind=fields.pop("kind", "person"),
        name=name,
        tier=fields.pop("tier", "regular"),
        lifecycle=fields.pop("lifecycle", "active"),
        tags=[],
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )
    session.add(customer)
    await session.flush()
    session.add_all(Phone(customer_id=customer.id, e164=n) for n in phones)
    return customer.id


def entry(customer_id: int, kind: str, ago: timedelta, **fields: Any) -> Interaction:
    return Interaction(
        customer_id=customer_id,
        kind=kind,
        occurred_at=NOW - ago,
        title=fields.pop("title", kind),
        **fields,
    )


def ivr_store(engine: AsyncEngine, clock: Clock) -> IvrStore:
    return IvrStore(engine, CustomerStore(engine, PHONES), PHONES, clock=clock)


@pytest.fixture
async def stored(engine: AsyncEngine) -> AsyncIterator[Stored]:
    clock = Clock()
    ivr = ivr_store(engine, clock)
    async with ivr.sessions() as session, session.begin():
        acme = await add(
            session, "ACME 有限公司", ["+862079460958"], kind="company", tier="vip", owner="bob"
        )
        wei = await add(
            session, "张伟", ["+8613800138000"], language="zh", owner="alice", company_id=acme
        )
        twin_a = await add(session, "Ana Twin", ["+4930123456"], lifecycle="lapsed")
        twin_b = await add(session, HOSTILE, ["+4930123456"], language="de")
    yield Stored(ivr, clock, wei, acme, twin_a, twin_b)
    await ivr.store.close()


async def count(engine: AsyncEngine, model: type[Any], *where: Any) -> int:
    async with AsyncSession(engine) as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


# -- finding the caller ----------------------------------------------------------------------


async def test_find_by_phone_in_any_spelling(stored: Stored) -> None:
    wei = CustomerInfo(stored.wei, "张伟", "regular", "active", "zh", "alice")
    for spelling in ("13800138000", "+86 138 0013 8000", "008613800138000"):
        assert await stored.ivr.find_by_phone(spelling) == (wei,)
    twins = await stored.ivr.find_by_phone("+49 30 123456")
    assert [(c.id, c.name, c.lifecycle) for c in twins] == [
        (stored.twin_a, "Ana Twin", "lapsed"),
        (stored.twin_b, HOSTILE, "active"),
    ]
    assert await stored.ivr.find_by_phone("13900000000") == ()  # nobody has it
    assert await stored.ivr.find_by_phone("1001") == ()  # an internal extension
    assert await stored.ivr.find_by_phone("anonymous") == ()


async def test_find_by_account_is_the_customer_id(stored: Stored) -> None:
    acme = CustomerInfo(stored.acme, "ACME 有限公司", "vip", "active", None, "bob")
    assert await stored.ivr.find_by_account(str(stored.acme)) == (acme,)
    assert await stored.ivr.find_by_account(f"000{stored.acme}") == (acme,)
    # a company's contact is a customer of its own: the company's id finds only the company
    assert [c.id for c in await stored.ivr.find_by_account(str(stored.wei))] == [stored.wei]
    for typed in ("999999", "0", "", "12a", f"{stored.acme}#", " 1", "-1", "\u0661", "²", "1.0"):
        assert await stored.ivr.find_by_account(typed) == (), typed
    for huge in ("2147483648", "99999999999", "9" * 5000):  # beyond PostgreSQL's integer
        assert await stored.ivr.find_by_account(huge) == ()


# -- PINs ------------------------------------------------------------------------------------


async def test_pin_unset_right_wrong_and_replaced(stored: Stored, engine: AsyncEngine) -> None:
    ivr = stored.ivr
    assert await ivr.verify_pin(stored.wei, "1234") is False  # no PIN yet
    await ivr.set_pin(stored.wei, "1234")
    assert await ivr.verify_pin(stored.wei, "1234") is True
    for wrong in ("1235", "4321", "12345", "", "12a4", "\uff11\uff12\uff13\uff14"):
        assert await ivr.verify_pin(stored.wei, wrong) is False, wrong
    assert await ivr.verify_pin(stored.acme, "1234") is False  # another customer's PIN
    assert await ivr.verify_pin(999_999, "1234") is False
    assert await ivr.verify_pin(2**40, "1234") is False
    async with AsyncSession(engine) as session:
        first = await session.scalar(select(Customer.pin_hash).where(Customer.id == stored.wei))
    assert first is not None and first.startswith("scrypt$4096$8$1$") and "1234" not in first
    await ivr.set_pin(stored.wei, "98765432")
    assert await ivr.verify_pin(stored.wei, "1234") is False
    assert await ivr.verify_pin(stored.wei, "98765432") is True
    await ivr.set_pin(stored.acme, "1234")
    async with AsyncSession(engine) as session:
        hashes = set(await session.scalars(select(Customer.pin_hash)))
    assert len(hashes - {None}) == 2 and first not in hashes  # a fresh salt each time


async def test_set_pin_refuses_bad_pins_and_unknown_customers(stored: Stored) -> None:
    for bad in (
        "123",
        "123456789",
        "12a4",
        "",
        " 1234",
        "1234\n",
        "\uff11\uff12\uff13\uff14",
        "\u0661\u0662\u0663\u0664",
    ):
        with pytest.raises(ValueError, match="4 to 8 digits"):
            await stored.ivr.set_pin(stored.wei, bad)
    for unknown in (999_999, 0, -1, 2**40):
        with pytest.raises(ValueError, match="no customer"):
            await stored.ivr.set_pin(unknown, "1234")
    assert await stored.ivr.verify_pin(stored.wei, "1234") is False  # nothing was set


async def test_a_malformed_pin_hash_refuses_the_pin(stored: Stored, engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        broken = update(Customer).where(Customer.id == stored.wei).values(pin_hash="1234")
        await session.execute(broken)
    assert await stored.ivr.verify_pin(stored.wei, "1234") is False


# -- figures ---------------------------------------------------------------------------------


async def set_account(engine: AsyncEngine, customer_id: int, **values: Any) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(update(Customer).where(Customer.id == customer_id).values(**values))


async def test_balance(stored: Stored, engine: AsyncEngine) -> None:
    figure = stored.ivr.figure
    assert await figure("balance", stored.wei) == FigureValue("none")
    cases = [
        (Decimal("-12.5"), "cny", FigureValue("amount", "-12.50", "CNY")),
        (Decimal("1234567890.99"), "EUR", FigureValue("amount", "1234567890.99", "EUR")),
        (Decimal("0"), None, FigureValue("amount", "0.00", None)),
        (Decimal("7"), "€$x", FigureValue("amount", "7.00", None)),  # not a currency code
        (None, "USD", FigureValue("none")),
    ]
    for balance, currency, expected in cases:
        await set_account(engine, stored.wei, balance=balance, currency=currency)
        got = await figure("balance", stored.wei)
        assert got == expected
        assert speech("balance", "ivr/en/balance-is", got)  # the walker can say it
    assert await figure("balance", 999_999) == FigureValue("none")


async def test_last_order(stored: Stored, engine: AsyncEngine) -> None:
    figure = stored.ivr.figure
    async with AsyncSession(engine) as session, session.begin():
        session.add(entry(stored.wei, "ticket", timedelta(hours=1), status="open"))
    assert await figure("last_order", stored.wei) == FigureValue("none")  # no order at all
    cases = [
        ("Shipped", FigureValue("text", "shipped")),
        ("in-transit", FigureValue("text", "in-transit")),
        (None, FigureValue("none")),
        ("<b>x</b>", FigureValue("none")),
        ("../../etc", FigureValue("none")),
        ("-rm", FigureValue("none")),
        ("paid online", FigureValue("none")),
        ("😀", FigureValue("none")),
    ]
    for days, (status, expected) in enumerate(cases):
        async with AsyncSession(engine) as session, session.begin():
            # each is newer than the ones before; an older order that fits must not show
            session.add(entry(stored.wei, "order", timedelta(days=30 - days), status=status))
        got = await figure("last_order", stored.wei)
        assert got == expected, status
        assert speech("last_order", "ivr/en/last-order-is", got)
    assert await figure("last_order", stored.acme) == FigureValue("none")


async def test_open_tickets(stored: Stored, engine: AsyncEngine) -> None:
    assert await stored.ivr.figure("open_tickets", stored.wei) == FigureValue("number", "0")
    async with AsyncSession(engine) as session, session.begin():
        session.add_all(
            [
                entry(stored.wei, "ticket", timedelta(days=1), status="open"),
                entry(stored.wei, "ticket", timedelta(days=2), status="open"),
                entry(stored.wei, "ticket", timedelta(days=3), status="closed"),
                entry(stored.wei, "followup", timedelta(days=1), status="open"),
                entry(stored.acme, "ticket", timedelta(days=1), status="open"),
            ]
        )
    got = await stored.ivr.figure("open_tickets", stored.wei)
    assert got == FigureValue("number", "2")
    assert speech("open_tickets", "ivr/en/tickets", got)
    assert await stored.ivr.figure("open_tickets", 999_999) == FigureValue("none")  # nobody


# -- callbacks -------------------------------------------------------------------------------


async def followup(engine: AsyncEngine, followup_id: str) -> Interaction:
    async with AsyncSession(engine) as session:
        row = await session.get(Interaction, int(followup_id))
        assert row is not None
        return row


async def test_callback_for_a_known_caller_is_idempotent_per_call(
    stored: Stored, engine: AsyncEngine
) -> None:
    ivr = stored.ivr
    made = await ivr.request_callback("support", "13800138000", stored.wei, "pbx1-1700.1")
    row = await followup(engine, made)
    assert (row.customer_id, row.kind, row.status, row.owner, row.title, row.call_id) == (
        stored.wei,
        "followup",
        "open",
        "queue:support",
        CALLBACK_TITLE,
        "pbx1-1700.1",
    )
    assert row.body is not None and "+8613800138000" in row.body
    assert row.due_at is not None  # dated now: the caller keeps their place in the line
    assert row.occurred_at.replace(tzinfo=UTC) == row.due_at.replace(tzinfo=UTC) == NOW
    stored.clock.now = NOW + timedelta(minutes=1)
    again = await ivr.request_callback("support", "13800138000", stored.wei, "pbx1-1700.1")
    assert again == made
    assert (await followup(engine, made)).occurred_at.replace(tzinfo=UTC) == NOW  # kept its place
    other = await ivr.request_callback("sales", "13800138000", stored.wei, "x" * 80)
    assert other != made and (await followup(engine, other)).call_id == "x" * 80
    assert await ivr.request_callback("sales", "13800138000", stored.wei, "x" * 80) == other
    no_call = {await ivr.request_callback("sales", "13800138000", stored.wei, None) for _ in "ab"}
    assert len(no_call) == 2  # without a call id nothing tells two requests apart
    assert await count(engine, Interaction, Interaction.kind == "followup") == 4
    with pytest.raises(CustomerError, match="unknown customer 999999"):
        await ivr.request_callback("sales", "13800138000", 999_999, "c-gone")
    assert await count(engine, Interaction, Interaction.kind == "followup") == 4


async def test_callback_for_an_unknown_caller_makes_them_known(
    stored: Stored, engine: AsyncEngine
) -> None:
    ivr = stored.ivr
    customers = await count(engine, Customer)
    assert await ivr.find_by_phone("13900000001") == ()
    made = await ivr.request_callback("support", "139 0000 0001", None, "c-1")
    assert await ivr.request_callback("support", "13900000001", None, "c-1") == made
    assert await count(engine, Customer) == customers + 1  # one new customer, not two
    (found,) = await ivr.find_by_phone("+8613900000001")
    assert (found.name, found.tier, found.lifecycle) == (
        "Caller +8613900000001",
        "regular",
        "prospect",
    )
    assert (await followup(engine, made)).customer_id == found.id
    async with AsyncSession(engine) as session:
        kind = await session.scalar(select(Customer.kind).where(Customer.id == found.id))
    assert kind == "person"


async def test_callback_for_an_unidentified_holder_of_the_number(
    stored: Stored, engine: AsyncEngine
) -> None:
    customers = await count(engine, Customer)
    shared = await stored.ivr.request_callback("support", "+49 30 123456", None, "c-2")
    assert (await followup(engine, shared)).customer_id == stored.twin_a  # the first holder
    assert await count(engine, Customer) == customers  # no duplicate of a known number


async def test_callback_for_a_number_that_is_not_e164(stored: Stored, engine: AsyncEngine) -> None:
    made = await stored.ivr.request_callback("support", "1001\x00<b>", None, "c-3")
    row = await followup(engine, made)
    async with AsyncSession(engine) as session:
        name = await session.scalar(select(Customer.name).where(Customer.id == row.customer_id))
        phones = await session.scalar(
            select(func.count()).where(Phone.customer_id == row.customer_id)
        )
    assert (name, phones, row.body) == ("Caller 1001", 0, "Call back 1001")


async def test_concurrent_callbacks_for_one_call_make_one(
    stored: Stored, engine: AsyncEngine
) -> None:
    made = await asyncio.gather(
        *(stored.ivr.request_callback("support", "13900000002", None, "c-4") for _ in range(4))
    )
    assert len(set(made)) == 1
    assert await count(engine, Interaction, Interaction.call_id == "c-4") == 1


# -- surveys ---------------------------------------------------------------------------------


async def test_survey_saved_again_updates_the_scores(stored: Stored, engine: AsyncEngine) -> None:
    ivr = stored.ivr
    assert await ivr.scores_for("pbx1", "c-1") == {}
    await ivr.save_survey("pbx1", "c-1", "alice", stored.wei, {"overall": 4, "agent": 5})
    assert await ivr.scores_for("pbx1", "c-1") == {"overall": 4, "agent": 5}
    await ivr.save_survey("pbx1", "c-1", "alice", stored.wei, {"overall": 2, "speed": 3})
    assert await ivr.scores_for("pbx1", "c-1") == {"overall": 2, "agent": 5, "speed": 3}
    assert await ivr.scores_for("pbx2", "c-1") == {}  # another PBX's call of the same id
    assert await count(engine, CallScore) == 3
    await ivr.save_survey("pbx1", "c-1", "alice", None, {})
    assert await count(engine, CallScore) == 3


async def test_agent_scores_average_per_question_since(stored: Stored) -> None:
    ivr = stored.ivr
    stored.clock.now = NOW - timedelta(days=2)
    await ivr.save_survey("pbx1", "old", "alice", None, {"overall": 0})
    stored.clock.now = NOW
    await ivr.save_survey("pbx1", "a", "alice", stored.wei, {"overall": 5, "agent": 4})
    await ivr.save_survey("pbx1", "b", "alice", None, {"overall": 2})
    await ivr.save_survey("pbx2", "a", "alice", None, {"overall": 4})
    await ivr.save_survey("pbx1", "c", "bob", None, {"overall": 1})
    await ivr.save_survey("pbx1", "d", None, None, {"overall": 1})
    await ivr.save_survey("pbx1", "b", "alice", None, {"overall": 3})  # re-scored
    since = NOW - timedelta(days=1)
    assert await ivr.agent_scores("alice", since) == {"overall": (4.0, 3), "agent": (4.0, 1)}
    assert await ivr.agent_scores("bob", since) == {"overall": (1.0, 1)}
    assert await ivr.agent_scores("alice", NOW - timedelta(days=3)) == {
        "overall": (3.0, 4),
        "agent": (4.0, 1),
    }
    assert await ivr.agent_scores("carol", since) == {}
    with pytest.raises(ValueError, match="time zone"):
        await ivr.agent_scores("alice", since.replace(tzinfo=None))


async def test_survey_input_and_a_deleted_customer(stored: Stored, engine: AsyncEngine) -> None:
    ivr = stored.ivr
    for bad in (
        ("p" * 65, "c", "alice", {"q": 1}),
        ("pbx1", "", "alice", {"q": 1}),
        ("pbx1", "c", "a" * 65, {"q": 1}),
        ("pbx1", "c", "alice", {"q" * 33: 1}),
    ):
        with pytest.raises(ValueError):
            await ivr.save_survey(bad[0], bad[1], bad[2], None, bad[3])
    assert await count(engine, CallScore) == 0
    await ivr.save_survey("pbx1", "c", "alice", stored.twin_b, {"overall": 5})
    async with AsyncSession(engine) as session, session.begin():
        await session.delete(await session.get(Customer, stored.twin_b))
    async with AsyncSession(engine) as session:
        kept = (await session.execute(select(CallScore.customer_id, CallScore.score))).all()
    assert [tuple(row) for row in kept] == [(None, 5)]  # the score outlives the customer


# -- demo data -------------------------------------------------------------------------------


async def test_seeded_customers_have_the_demo_pin_and_balances(engine: AsyncEngine) -> None:
    async def accounts() -> list[tuple[Any, ...]]:
        async with AsyncSession(engine) as session:
            query = select(
                Customer.external_id,
                Customer.kind,
                Customer.language,
                Customer.balance,
                Customer.currency,
                Customer.id,
            ).order_by(Customer.external_id)
            return [tuple(row) for row in await session.execute(query)]

    kw: dict[str, Any] = {"customers": 150, "seed": 3, "now": NOW, "phones": PHONES}
    report = await seed_demo(engine, simulator_calls=0, **kw)
    first = await accounts()
    await seed_demo(engine, simulator_calls=0, **kw)
    again = await accounts()
    assert [row[:5] for row in again] == [row[:5] for row in first]  # the same for a seed
    with_balance = [row for row in again if row[3] is not None]
    assert report.balances == len(with_balance) and 0.7 < len(with_balance) / 150 < 0.95
    currencies = {"zh": {"CNY"}, "en": {"USD"}, "es": {"EUR"}, "de": {"EUR"}, "fr": {"EUR"}}
    assert all(row[4] in currencies[row[2]] for row in with_balance)
    assert any(row[3] < 0 for row in with_balance)  # some owe money
    ivr = ivr_store(engine, Clock())
    person = next(row for row in again if row[1] == "person" and row[3] is not None)
    company = next(row for row in again if row[1] == "company")
    assert report.pins == sum(1 for row in again if row[1] == "person")
    assert await ivr.verify_pin(person[5], "1234") is True
    assert await ivr.verify_pin(person[5], "4321") is False
    assert await ivr.verify_pin(company[5], "1234") is False  # a company is no caller
    said = await ivr.figure("balance", person[5])
    assert said == FigureValue("amount", f"{person[3]:f}", person[4])
    assert "persons with PIN 1234" in report.describe()
    await ivr.store.close()


# -- the database fails ----------------------------------------------------------------------


async def every_call(ivr: IvrStore, customer_id: int) -> list[str]:
    """Run every method; the names of those that raised StoreUnavailable."""
    calls = {
        "find_by_phone": ivr.find_by_phone("13800138000"),
        "find_by_account": ivr.find_by_account(str(customer_id)),
        "verify_pin": ivr.verify_pin(customer_id, "1234"),
        "set_pin": ivr.set_pin(customer_id, "4321"),
        "balance": ivr.figure("balance", customer_id),
        "last_order": ivr.figure("last_order", customer_id),
        "open_tickets": ivr.figure("open_tickets", customer_id),
        "callback": ivr.request_callback("support", "13800138000", None, "c-9"),
        "survey": ivr.save_survey("pbx1", "c-9", "alice", None, {"overall": 5}),
        "scores_for": ivr.scores_for("pbx1", "c-9"),
        "agent_scores": ivr.agent_scores("alice", NOW),
    }
    failed = []
    for name, call in calls.items():
        try:
            await call
        except StoreUnavailable as exc:
            assert "scrypt$" not in str(exc) and "scrypt$" not in str(exc.__cause__)
            failed.append(name)
    return failed


ALL = [
    "find_by_phone",
    "find_by_account",
    "verify_pin",
    "set_pin",
    "balance",
    "last_order",
    "open_tickets",
    "callback",
    "survey",
    "scores_for",
    "agent_scores",
]


def lose(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


async def test_a_database_gone_in_use_raises_store_unavailable(
    stored: Stored, engine: AsyncEngine, db_url: str
) -> None:
    await stored.ivr.set_pin(stored.wei, "1234")
    assert await every_call(stored.ivr, stored.wei) == []  # all is well first
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        # the file is lost: a new connection finds an empty database in its place
        await engine.dispose()
        await stored.ivr.store.close()
        await asyncio.to_thread(lose, Path(url.database or ""))
    else:
        admin = make_url(PG_URL)
        conn = await asyncpg.connect(
            host=admin.host, port=admin.port, user=admin.username, database=admin.database
        )
        await conn.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')
        await conn.close()
    assert await every_call(stored.ivr, stored.wei) == ALL


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///{tmp}/no/such/folder/cti.sqlite3",
        "postgresql+asyncpg://postgres@127.0.0.1:1/none",
    ],
)
async def test_a_database_never_there_raises_store_unavailable(url: str, tmp_path: Path) -> None:
    engine = create_async_engine(url.format(tmp=tmp_path))  # not create_engine: no mkdir
    ivr = ivr_store(engine, Clock())
    try:
        assert await every_call(ivr, 1) == ALL
    finally:
        await ivr.store.close()
        await engine.dispose()
    assert not (tmp_path / "no").exists()


# -- the migration ---------------------------------------------------------------------------


async def test_downgrade_to_0001_keeps_the_data(
    stored: Stored, engine: AsyncEngine, db_url: str
) -> None:
    await stored.ivr.set_pin(stored.wei, "1234")
    await stored.ivr.save_survey("pbx1", "c-1", "alice", stored.wei, {"overall": 5})
    phones, timeline = await count(engine, Phone), await count(engine, Interaction)
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0001")
    async with engine.connect() as conn:
        tables, columns = await conn.run_sync(
            lambda sync: (
                inspect(sync).get_table_names(),
                {c["name"] for c in inspect(sync).get_columns("customers")},
            )
        )
    assert "call_scores" not in tables and not {"pin_hash", "balance", "currency"} & columns
    assert (await count(engine, Phone), await count(engine, Interaction)) == (phones, timeline)
    await engine.dispose()
    await asyncio.to_thread(upgrade, db_url)
    assert await stored.ivr.find_by_account(str(stored.wei))
    assert await stored.ivr.verify_pin(stored.wei, "1234") is False  # the PINs went with 0002


# -- cti db set-pin --------------------------------------------------------------------------


async def test_cli_set_pin_reads_the_pin_from_stdin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cti.sqlite3'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    ivr = ivr_store(engine, Clock())
    try:
        async with ivr.sessions() as session, session.begin():
            wei = await add(session, "张伟", ["+8613800138000"])
        done = await asyncio.to_thread(
            cti, "db", "set-pin", str(wei), "--url", url, cwd=ROOT, stdin="4321\n"
        )
        assert done.returncode == 0, done.stderr
        assert f"PIN set for customer {wei}" in done.stdout and "4321" not in done.stdout
        assert await ivr.verify_pin(wei, "4321") is True
        short = await asyncio.to_thread(
            cti, "db", "set-pin", str(wei), "--url", url, cwd=ROOT, stdin="12\n"
        )
        assert short.returncode == 2 and "4 to 8 digits" in short.stderr
        nobody = await asyncio.to_thread(
            cti, "db", "set-pin", "999", "--url", url, cwd=ROOT, stdin="1234\n"
        )
        assert nobody.returncode == 2 and "no customer 999" in nobody.stderr
        # the PIN is not an argument: it would show in ps
        argued = await asyncio.to_thread(
            cti, "db", "set-pin", str(wei), "5555", "--url", url, cwd=ROOT, stdin=""
        )
        assert argued.returncode == 2 and "unrecognized arguments" in argued.stderr
        assert await ivr.verify_pin(wei, "4321") is True  # still the first PIN
    finally:
        await ivr.store.close()
        await engine.dispose()
