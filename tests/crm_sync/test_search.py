"""Customer search on SQLite and PostgreSQL: any word of a name from its start, folded; CJK
names by character; numbers in any spelling; the CRM's id; every way a name is written keeps
the index true (import, rename, a customer made from a call, the migration of old rows)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.customers import CustomerIn, save_customers
from crm_sync.migrate import alembic_config, upgrade
from crm_sync.models import Customer
from crm_sync.phones import PhoneNormalizer
from crm_sync.search import CustomerSearch, fold, query_words, terms
from crm_sync.timeline import OutcomeIn, save_outcome

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")


def person(external_id: str, name: str, *phones: str, **fields: Any) -> CustomerIn:
    return CustomerIn(external_id=external_id, kind="person", name=name, phones=phones, **fields)


@pytest.fixture
def search(engine: AsyncEngine) -> CustomerSearch:
    return CustomerSearch(async_sessionmaker(engine, expire_on_commit=False), PHONES)


async def save(search: CustomerSearch, *customers: CustomerIn) -> None:
    async with search.sessions() as session, session.begin():
        await save_customers(session, list(customers), now=NOW)


async def names(search: CustomerSearch, query: str) -> list[str]:
    return [f.name for f in (await search.find(query)).found]


def test_terms_fold_case_accents_and_width_and_split_cjk_by_character() -> None:
    assert terms("Anna-Lena MÜLLER") == {"anna", "lena", "muller"}
    assert terms("张伟") == {"张伟", "张", "伟"}
    assert fold("\uff21\uff22\uff23 Straße") == "abc strasse"  # full-width ABC
    assert query_words("  müller   ANNA ") == ["muller", "anna"]


async def test_any_word_of_a_name_from_its_start(search: CustomerSearch) -> None:
    await save(
        search,
        person("P-1", "Anna-Lena Müller", "+8613800138000"),
        person("P-2", "Jürgen Schmidt"),
        person("P-3", "Anne Mueller"),
    )
    assert await names(search, "mül") == ["Anna-Lena Müller"]
    assert await names(search, "MULLER") == ["Anna-Lena Müller"]
    assert await names(search, "lena ann") == ["Anna-Lena Müller"]
    assert await names(search, "ann") == ["Anna-Lena Müller", "Anne Mueller"]
    assert await names(search, "ller") == []  # a word's start, not its middle
    assert await names(search, "schmidt jurgen") == ["Jürgen Schmidt"]


async def test_chinese_names_by_any_character_or_the_whole(search: CustomerSearch) -> None:
    await save(search, person("C-1", "张伟"), person("C-2", "王芳"), person("C-3", "张丽"))
    assert await names(search, "张伟") == ["张伟"]
    assert await names(search, "伟") == ["张伟"]
    assert sorted(await names(search, "张")) == ["张丽", "张伟"]


async def test_a_number_in_any_spelling_and_the_crm_id(search: CustomerSearch) -> None:
    await save(search, person("CRM-0042", "Wang Fang", "+8613800138000"))
    for spelling in ("+86 138 0013 8000", "13800138000", "008613800138000"):
        (found,) = (await search.find(spelling)).found
        assert (found.name, found.matched, found.phones) == (
            "Wang Fang",
            "phone",
            ("+8613800138000",),
        )
    (found,) = (await search.find("CRM-0042")).found
    assert (found.name, found.matched, found.external_id) == (
        "Wang Fang",
        "external_id",
        "CRM-0042",
    )
    assert await names(search, "1001") == []  # an extension is nobody's number


async def test_hostile_queries_find_nothing_and_break_nothing(search: CustomerSearch) -> None:
    await save(search, person("P-1", "O'Brien <b>x</b>"))
    for query in ("%", "_", "' OR 1=1 --", '"; DROP TABLE customers; --', "\x00", "a" * 5000):
        assert (await search.find(query)).found == ()
    assert await names(search, "o'brien") == ["O'Brien <b>x</b>"]
    assert await names(search, "<b>") == ["O'Brien <b>x</b>"]  # words, whatever surrounds them


async def test_at_most_twenty_and_a_sign_that_there_are_more(search: CustomerSearch) -> None:
    await save(search, *(person(f"P-{n}", f"Anna {n:02d}") for n in range(25)))
    results = await search.find("anna")
    assert len(results.found) == 20 and results.more
    assert [f.name for f in results.found] == [f"Anna {n:02d}" for n in range(20)]  # by name
    narrowed = await search.find("anna 07")
    assert [f.name for f in narrowed.found] == ["Anna 07"] and not narrowed.more


async def test_a_renamed_customer_is_found_by_the_new_name_only(search: CustomerSearch) -> None:
    await save(search, person("P-1", "Maria Lopez"))
    await save(search, person("P-1", "Maria Garcia"))
    assert await names(search, "garc") == ["Maria Garcia"]
    assert await names(search, "lopez") == []


async def test_a_customer_made_from_a_call_is_found(search: CustomerSearch) -> None:
    outcome = OutcomeIn(
        key="k1",
        pbx="p",
        call_id="c1",
        agent="alice",
        disposition="resolved",
        notes="",
        customer_id=None,
        new_customer_name="Émilie Dubois",
        caller_e164="+33612345678",
    )
    await save_outcome(search.sessions, outcome, now=NOW)
    assert await names(search, "emilie") == ["Émilie Dubois"]


async def test_the_migration_indexes_the_customers_already_stored(
    engine: AsyncEngine, db_url: str, search: CustomerSearch
) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0005")
    async with engine.begin() as conn:
        await conn.execute(
            insert(Customer),
            [
                {
                    "kind": "person",
                    "name": f"Kunde Nummer {n}",
                    "tier": "regular",
                    "lifecycle": "active",
                    "tags": [],
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(1500)  # more than one batch
            ],
        )
    await asyncio.to_thread(upgrade, db_url)
    assert await names(search, "kunde 1499") == ["Kunde Nummer 1499"]
    assert len((await search.find("nummer")).found) == 20
