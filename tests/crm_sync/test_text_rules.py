"""The one text rule (crm_sync.text), and every write path of the store going through it:
outcomes (notes, a new customer's name), notes, ratings, customers, timeline entries, CRM
merges; on SQLite and PostgreSQL, where a NUL once made an outcome unsavable for good."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import ratings
from crm_sync.customers import (
    CustomerError,
    CustomerIn,
    InteractionIn,
    utc,
    validate,
    validate_interaction,
)
from crm_sync.models import AgentRating, Customer, Interaction
from crm_sync.phones import PhoneNormalizer
from crm_sync.records import merge_record
from crm_sync.store import CustomerStore
from crm_sync.text import FieldError, line, lines, required_line
from crm_sync.timeline import OutcomeError, OutcomeIn, add_note, save_outcome

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BIDI = {
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
}
HOSTILE = ["a\rb", "a\nb", "a\x00b", "a\u202eb", "a\ud800b", "a\x85b", "a\u2066b"]
ALL = [chr(c) for c in range(sys.maxunicode + 1)]


def _refused(check: object) -> set[str]:
    found = set()
    for char in ALL:
        try:
            check(f"a{char}b", "f", 10)  # type: ignore[operator]
        except FieldError:
            found.add(char)
    return found


def test_a_line_refuses_exactly_cc_cs_and_the_bidi_controls() -> None:
    control = {c for c in ALL if unicodedata.category(c) in ("Cc", "Cs")}
    assert _refused(line) == control | BIDI


def test_free_text_allows_lf_and_tab_and_keeps_the_bidi_marks() -> None:
    control = {c for c in ALL if unicodedata.category(c) in ("Cc", "Cs")}
    assert _refused(lines) == control - {"\n", "\t"}
    assert lines("  first\r\nsecond\tcol \u200f ", "notes", 100) == "first\nsecond\tcol \u200f"
    with pytest.raises(FieldError, match=r"U\+000D"):
        lines("lone\rcr", "notes", 100)


def test_text_is_trimmed_counted_after_and_named_in_the_error() -> None:
    assert line("  Wei  ", "name", 3) == "Wei"
    assert line("   ", "name", 3) is None and line(None, "name", 3) is None
    with pytest.raises(FieldError) as caught:
        line("abcd", "name", 3)
    assert caught.value.field == "name" and "longer than 3" in str(caught.value)
    with pytest.raises(FieldError, match="must not be empty"):
        required_line(" ", "title", 10)


@pytest.mark.parametrize("bad", HOSTILE)
def test_customers_entries_and_merges_refuse_what_a_line_refuses(bad: str) -> None:
    phones = PhoneNormalizer("CN")
    with pytest.raises(CustomerError) as caught:
        validate(CustomerIn(external_id="P-1", kind="person", name=bad), phones)
    assert caught.value.field == "name"
    entry = InteractionIn("P-1", "note", NOW, title=bad)
    with pytest.raises(CustomerError, match=r"^title"):
        validate_interaction(entry)
    with pytest.raises(FieldError, match=r"^survivor_external_id"):
        merge_record({"survivor_external_id": bad, "merged_external_id": "P-2"})


def test_bodies_and_addresses_keep_their_line_breaks() -> None:
    entry = validate_interaction(InteractionIn("P-1", "note", NOW, "t", body="one\r\ntwo"))
    assert entry.body == "one\ntwo"
    with pytest.raises(CustomerError, match=r"^body"):
        validate_interaction(InteractionIn("P-1", "note", NOW, "t", body="nul\x00"))


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1899, 12, 31, tzinfo=UTC),
        datetime(2200, 1, 1, tzinfo=UTC),
    ],
)
def test_times_out_of_range_are_refused_not_overflowed(when: datetime) -> None:
    with pytest.raises(CustomerError, match=r"^occurred_at: must be in the years 1900 to 2199"):
        utc(when, "occurred_at")


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[CustomerStore]:
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    async with store.sessions() as session, session.begin():
        session.add(
            Customer(
                kind="person",
                name="Wei",
                tier="regular",
                lifecycle="active",
                tags=[],
                created_at=NOW,
                updated_at=NOW,
            )
        )
    yield store
    await store.close()


def _outcome(key: str, **changes: object) -> OutcomeIn:
    fields: dict[str, object] = dict(
        key=key,
        pbx="p",
        call_id="c1",
        agent="alice",
        disposition="resolved",
        notes="fine",
        customer_id=1,
        new_customer_name=None,
        caller_e164=None,
    )
    fields.update(changes)
    return OutcomeIn(**fields)  # type: ignore[arg-type]


async def _rows(store: CustomerStore) -> tuple[int, int, int]:
    async with store.sessions() as session:
        return (
            int(await session.scalar(select(func.count()).select_from(Interaction)) or 0),
            int(await session.scalar(select(func.count()).select_from(Customer)) or 0),
            int(await session.scalar(select(func.count()).select_from(AgentRating)) or 0),
        )


async def test_a_nul_in_notes_is_refused_and_clean_notes_then_save(store: CustomerStore) -> None:
    with pytest.raises(FieldError) as caught:
        await save_outcome(store.sessions, _outcome("k-nul-1", notes="bad\x00"), now=NOW)
    assert caught.value.field == "notes"
    assert await _rows(store) == (0, 1, 0)
    saved = await save_outcome(store.sessions, _outcome("k-nul-1", notes="a\r\nb"), now=NOW)
    async with store.sessions() as session:
        body = await session.scalar(
            select(Interaction.body).where(Interaction.id == saved.interaction_id)
        )
    assert body == "a\nb" and not saved.duplicate


@pytest.mark.parametrize("bad", ["x\ry", "x\ny", "x\x00y", "x\u202ey"])
async def test_a_new_customers_name_follows_the_line_rule(store: CustomerStore, bad: str) -> None:
    item = _outcome("k-name-1", customer_id=None, new_customer_name=bad)
    with pytest.raises(FieldError, match=r"^new_customer_name"):
        await save_outcome(store.sessions, item, now=NOW)
    assert await _rows(store) == (0, 1, 0)


async def test_notes_and_ratings_refuse_a_nul(store: CustomerStore) -> None:
    with pytest.raises(OutcomeError, match=r"U\+0000"):
        await add_note(store.sessions, 1, agent="alice", text="a\x00", key="n1", now=NOW)
    with pytest.raises(FieldError, match=r"^note"):
        await ratings.record(store.sessions, at=NOW, agent="a", rater="s", score=3, note="\x00")
    assert await _rows(store) == (0, 1, 0)
    await ratings.record(store.sessions, at=NOW, agent="a", rater="s", score=3, note="ok\r\n")
    (kept,) = await ratings.recent(store.sessions, "a")
    assert kept.note == "ok"
