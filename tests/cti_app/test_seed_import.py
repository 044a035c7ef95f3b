"""Demo seeding and CSV import on SQLite and PostgreSQL, the store settings, and the
``cti db``/``seed-demo``/``import`` commands end to end in a subprocess."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.importer import ImportFileError, import_csv
from crm_sync.models import Customer, Interaction, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore
from cti.settings import DEFAULT_URL, SettingsError, load
from cti_app.seed import seed_demo, simulated_callers
from screenpop.dispositions import Dispositions
from tests.support.commands import cti

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")
ROOT = Path(__file__).parent.parent.parent
HEADER = (
    "external_id,kind,name,company_external_id,email,phones,address,owner,language,tier,"
    "lifecycle,tags\n"
)
HOSTILE = '<script>alert("x")</script> O\'Brien 张伟 😀'


async def snapshot(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Everything seeded, without database ids (they differ between runs)."""
    async with AsyncSession(engine) as session:
        customers = await session.execute(
            select(
                Customer.external_id,
                Customer.kind,
                Customer.name,
                Customer.email,
                Customer.tier,
                Customer.lifecycle,
                Customer.owner,
                Customer.tags,
            ).order_by(Customer.external_id)
        )
        phones = await session.execute(
            select(Customer.external_id, Phone.e164)
            .join(Phone, Phone.customer_id == Customer.id)
            .order_by(Customer.external_id, Phone.e164)
        )
        timeline = await session.execute(
            select(
                Customer.external_id,
                Interaction.kind,
                Interaction.occurred_at,
                Interaction.title,
                Interaction.amount,
                Interaction.status,
            )
            .join(Interaction, Interaction.customer_id == Customer.id)
            .order_by(Customer.external_id, Interaction.occurred_at, Interaction.title)
        )
        return [tuple(r) for r in [*customers, *phones, *timeline]]


async def count(engine: AsyncEngine, model: type[Any]) -> int:
    async with AsyncSession(engine) as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


# -- seeding ---------------------------------------------------------------------------------


async def test_seed_is_deterministic_and_counts_what_it_wrote(engine: AsyncEngine) -> None:
    kw: dict[str, Any] = {"customers": 150, "seed": 7, "now": NOW, "phones": PHONES}
    first = await seed_demo(engine, simulator_calls=60, **kw)
    before = await snapshot(engine)
    second = await seed_demo(engine, simulator_calls=60, **kw)
    assert await snapshot(engine) == before
    assert second.replaced == first.customers == 150 == await count(engine, Customer)
    assert first.persons + first.companies + first.contacts == 150
    assert first.companies > 0 and first.contacts >= first.companies
    assert first.phones == await count(engine, Phone)
    assert sum(n for _, n in first.interactions) == await count(engine, Interaction)
    assert {kind for kind, _ in first.interactions} >= {"order", "ticket", "email", "call"}
    other = await seed_demo(engine, simulator_calls=60, **{**kw, "seed": 8})
    assert await snapshot(engine) != before and other.replaced == 150


async def test_seeded_customers_answer_the_simulators_calls(engine: AsyncEngine) -> None:
    report = await seed_demo(
        engine, customers=200, seed=1, now=NOW, phones=PHONES, simulator_calls=80
    )
    store = CustomerStore(engine, PHONES)
    callers = await simulated_callers(1, 80)
    assert len(callers) == report.simulated_calls == 80
    statuses = Counter(
        [(await store.lookup(n, now=NOW, budget=5)).status for n in callers if n is not None]
    )
    # every call the report counts as matched really finds someone, whatever the spelling
    assert statuses["found"] + statuses["several"] == report.matched_calls
    assert 0.6 <= report.matched_calls / report.simulated_calls <= 0.9
    assert statuses["none"] > 0  # some callers stay unknown: the "new customer" pop
    spellings = {n[:4] for n in callers if n is not None}
    assert {"+861", "0086", "138"} & spellings  # the simulator's several spellings


async def test_lookup_finds_a_seeded_customer_in_another_spelling(engine: AsyncEngine) -> None:
    await seed_demo(engine, customers=100, now=NOW, phones=PHONES, simulator_calls=0)
    async with AsyncSession(engine) as session:
        name, e164 = (
            await session.execute(
                select(Customer.name, Phone.e164)
                .join(Phone, Phone.customer_id == Customer.id)
                .where(Phone.e164.like("+86138%"))
                .limit(1)
            )
        ).one()
    store = CustomerStore(engine, PHONES)
    for spelling in (e164[3:], "00" + e164[1:], f"+86 {e164[3:6]} {e164[6:10]} {e164[10:]}"):
        found = await store.lookup(spelling, now=NOW)
        assert found.status in ("found", "several"), spelling
        assert name in [card.name for card in found.cards]


async def test_full_demo_seed_is_realistic(engine: AsyncEngine) -> None:
    report = await seed_demo(engine, now=NOW, phones=PHONES)  # `cti demo` prints how long
    assert report.customers == 3000
    assert report.matched_calls / report.simulated_calls > 0.7  # documented: 75 %
    async with AsyncSession(engine) as session:
        tiers = Counter((await session.scalars(select(Customer.tier))).all())
        assert 0.02 < tiers["vip"] / 3000 < 0.1
        languages = set((await session.scalars(select(Customer.language))).all())
        assert languages == {"zh", "en", "es", "de", "fr"}
        names = set((await session.scalars(select(Customer.name))).all())
        assert any("\u4e00" <= name[0] <= "\u9fff" for name in names)  # Chinese
        assert any(set(name) & set("éñüöëß'") for name in names)  # Latin with accents
        day_ago = NOW - timedelta(hours=24)
        recent_calls = await session.scalar(
            select(func.count()).where(
                Interaction.kind == "call", Interaction.occurred_at >= day_ago
            )
        )
        open_items = Counter(
            await session.scalars(select(Interaction.kind).where(Interaction.status == "open"))
        )
        amounts = await session.scalar(select(func.count()).where(Interaction.amount.is_not(None)))
        shared = await session.scalars(
            select(Phone.e164).group_by(Phone.e164).having(func.count() > 1)
        )
        assert len(shared.all()) > 10  # households: the pop offers a choice
    assert recent_calls and open_items["ticket"] and open_items["followup"] and amounts
    # outcomes use the shipped codes (the page shows their labels), and the calls of the last
    # day all have theirs (My day of a fresh demo is not a list of missing outcomes)
    shipped = {d.code for d in Dispositions.load(ROOT / "config" / "dispositions.toml").items}
    async with AsyncSession(engine) as session:
        codes = set(
            await session.scalars(select(Interaction.title).where(Interaction.kind == "outcome"))
        )
        recent = select(Interaction.call_id).where(
            Interaction.kind == "call", Interaction.occurred_at >= day_ago
        )
        told = select(Interaction.call_id).where(Interaction.kind == "outcome")
        without = await session.scalar(
            select(func.count()).select_from(recent.except_(told).subquery())
        )
    assert codes and codes <= shipped, codes - shipped
    assert without == 0
    store = CustomerStore(engine, PHONES)
    callers = [n for n in await simulated_callers(1, 30) if n is not None]
    cards = [c for n in callers for c in (await store.lookup(n, now=NOW, budget=5)).cards]
    assert len([card for card in cards if card.recent]) > len(callers) / 2


# -- CSV import ------------------------------------------------------------------------------


def write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


GOOD_AND_BAD = (
    HEADER
    + "P-1,person,张伟,C-1,wei@example.com,13800138000; +1 555 0100 001,,alice,zh,,,b2b;wechat\n"
    + 'C-1,company,ACME 有限公司,,,+86 20 7946 0958,"Line 1\nLine 2",bob,en,vip,active,\n'
    + "P-2,person,,,,,,,,,,\n"  # line 5: no name
    + "P-3,person,Bad Phone,,,1001,,,,,,\n"
    + "P-4,person,Bad Mail,,nope@,,,,,,,\n"
    + "\n"
    + "P-1,person,Again,,,,,,,,,\n"  # line 9: repeated id
    + "P-5,person,Short row\n"
    + "P-6,person,Lonely,C-404,,,,,,,,\n"
    + ",person,No Id,,,,,,,,,\n"
    + f'P-7,person,"{HOSTILE.replace(chr(34), chr(34) * 2)}",,,0086 139 0000 0001,,,,low,lost,\n'
)


async def test_import_reports_bad_rows_and_keeps_the_good(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    report = await import_csv(
        engine,
        write(tmp_path / "c.csv", GOOD_AND_BAD),
        phones=PHONES,
        now=NOW,
        progress=lambda done, total: seen.append((done, total)),
        batch_size=1,
    )
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (10, 3, 0, 0)
    assert [(r.line, r.external_id, r.reason) for r in report.rejected] == [
        (5, "P-2", "name: must not be empty"),
        (6, "P-3", "phones: '1001' is an internal extension, not a customer's"),
        (7, "P-4", "email: 'nope@' is not an e-mail address"),
        (9, "P-1", "external_id 'P-1' already on line 2"),
        (10, "P-5", "3 fields where the header has 12"),
        (11, "P-6", "company_external_id: unknown company 'C-404'"),
        (12, None, "external_id: must not be empty (re-imports match on it)"),
    ]
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    store = CustomerStore(engine, PHONES)
    wei = (await store.lookup("+86 138 0013 8000", now=NOW)).cards
    assert [(c.name, c.company, c.tags) for c in wei] == [
        ("张伟", "ACME 有限公司", ("b2b", "wechat"))
    ]
    hostile = (await store.lookup("13900000001", now=NOW)).cards
    assert [(c.name, c.tier, c.lifecycle) for c in hostile] == [(HOSTILE, "low", "lost")]


async def test_reimport_is_idempotent_and_updates(engine: AsyncEngine, tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", GOOD_AND_BAD, bom=True)  # as spreadsheets save it
    first = await import_csv(engine, path, phones=PHONES, now=NOW, progress=None)
    before = await snapshot(engine)
    again = await import_csv(engine, path, phones=PHONES, now=NOW + timedelta(1), progress=None)
    assert (first.inserted, again.inserted, again.updated, again.unchanged) == (3, 0, 0, 3)
    assert again.rejected == first.rejected
    assert await snapshot(engine) == before
    write(path, HEADER + "P-1,person,张伟,,,13800138000,,carol,zh,vip,,\n")
    changed = await import_csv(engine, path, phones=PHONES, now=NOW, progress=None)
    assert (changed.updated, await count(engine, Customer), await count(engine, Phone)) == (1, 3, 3)
    card = (await CustomerStore(engine, PHONES).lookup("13800138000", now=NOW)).cards[0]
    assert (card.owner, card.tier, card.company, card.phones) == (
        "carol",
        "regular",  # a tier only starts a new customer: then the segments decide
        None,
        ("+8613800138000",),
    )


GOOD_ROWS = HEADER.encode() + b"P-8,person,Good,,,,,,,,,\nP-9,person,Good,,,,,,,,,\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"id,kind,name\nP-1,person,x\n",
            "unknown columns ['id']; missing columns ['external_id']",
        ),
        (b"external_id,kind,name,kind\n", "repeated columns ['kind']"),
        (b"", "the file is empty"),
        (GOOD_ROWS + b"P-1,person,M\xfcller,,,,,,,,,\n", "line 4 is not UTF-8"),
        (GOOD_ROWS + b'P-1,person,"a"b,,,,,,,,,\n', "not valid CSV at line 4"),
    ],
)
async def test_bad_file_is_refused_before_writing(
    engine: AsyncEngine, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=re.escape(message)):
        await import_csv(engine, path, phones=PHONES, now=NOW, progress=None)
    assert await count(engine, Customer) == 0  # not even the good rows before the fault


async def test_import_of_thousands_is_quick(engine: AsyncEngine, tmp_path: Path) -> None:
    rows = [HEADER.rstrip("\n")]
    for n in range(300):
        rows.append(f"C-{n},company,Firma {n} GmbH,,info{n}@example.de,+49 30 1{n:07d},,,de,,,")
    for n in range(2700):
        company = f"C-{n % 300}" if n % 3 == 0 else ""
        rows.append(f"P-{n},person,Person {n},{company},,138{n:08d},,,zh,,,a;b")
    path = write(tmp_path / "many.csv", "\n".join(rows) + "\n")
    report = await import_csv(engine, path, phones=PHONES, now=NOW, progress=None)
    assert (report.inserted, report.rejected) == (3000, ())
    assert report.seconds < 10


# -- settings and the command line -----------------------------------------------------------


def test_store_settings_layering(tmp_path: Path) -> None:
    assert load(None, env={}).store.database_url == DEFAULT_URL
    path = tmp_path / "cti.toml"
    path.write_text(
        '[store]\ndatabase_url = "postgresql://cti:s3cret@db/cti"\ndefault_region = "gb"\n'
        "lookup_budget = 0.5\n"
    )
    store = load(path, env={}).store
    assert (store.database_url, store.default_region, store.lookup_budget) == (
        "postgresql://cti:s3cret@db/cti",
        "GB",
        0.5,
    )
    assert "s3cret" not in repr(load(path, env={}))
    env = {"DATABASE_URL": "sqlite:///x.db", "CTI_DEFAULT_REGION": "DE"}
    store = load(path, env=env).store
    assert (store.database_url, store.default_region) == ("sqlite:///x.db", "DE")
    assert load(ROOT / "config" / "cti.example.toml", env={}).store.default_region == "CN"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[store]\nurl = 'x'\n", "unknown keys ['url']"),
        ("[store]\nlookup_budget = 'soon'\n", "[store]"),
        ("[store]\nlookup_budget = 0\n", "must be positive"),
        ("[store]\ndefault_region = 'China'\n", "not a country code"),
    ],
)
def test_bad_store_settings(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cti.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(path, env={})


def test_cli_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite3"
    url = f"sqlite:///{db}"
    upgraded = cti("db", "upgrade", cwd=tmp_path, env={"DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    assert db.exists() and "up to date" in upgraded.stdout

    seeded = cti("seed-demo", "--customers", "120", "--url", url, cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert "customers: 120 (" in seeded.stdout and "simulator:" in seeded.stdout

    mixed = cti("import", str(write(tmp_path / "c.csv", GOOD_AND_BAD)), "--url", url, cwd=tmp_path)
    assert mixed.returncode == 1, mixed.stderr
    assert "3 accepted (3 new, 0 updated, 0 unchanged), 7 rejected, of 10 rows" in mixed.stdout
    assert "line 6: phones: '1001' is an internal extension" in mixed.stdout
    assert "10/10 100%" in mixed.stderr  # the progress bar

    clean = write(tmp_path / "ok.csv", HEADER + "P-1,person,张伟,,,13800138000,,,,,,\n", bom=True)
    ok = cti("import", str(clean), "--url", url, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "1 accepted (0 new, 1 updated, 0 unchanged), 0 rejected" in ok.stdout

    bad = cti("import", str(write(tmp_path / "bad.csv", "id,name\n")), "--url", url, cwd=tmp_path)
    assert bad.returncode == 2 and "wrong header" in bad.stderr
    missing = cti("import", str(tmp_path / "nope.csv"), "--url", url, cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert not (tmp_path / "data").exists()  # --url and DATABASE_URL were used, not the default


def test_cli_reports_an_unreachable_database(tmp_path: Path) -> None:
    refused = cti("db", "upgrade", "--url", "postgresql://cti:s3cret@127.0.0.1:1/cti", cwd=tmp_path)
    assert refused.returncode == 2
    assert "cannot upgrade the database at postgresql://cti:***@127.0.0.1:1/cti" in refused.stderr
    assert "s3cret" not in refused.stderr
