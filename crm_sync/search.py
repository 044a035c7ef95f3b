"""Finding a customer by what an agent types: any word of a name (from its start), a phone
number in any spelling, or the CRM's id.

Names are found through ``customer_terms``: one row per folded word of each name. Folding
(compatibility form, accents dropped, case folded) makes "Müller", "MULLER" and "muller" one
term. A word is found by its start with a range (``term >= 'mul' AND term < 'mul\\U0010ffff'``)
that both SQLite and PostgreSQL answer from the b-tree of the primary key (term, customer);
PostgreSQL compares the column in the "C" collation, so the range is byte order there too.
``LIKE '%mul%'`` on the name would read all of a million customers.

Chinese, Japanese and Korean names are written without spaces between given and family
name: each of their characters is a term of its own, and so is the whole run, so "张伟" finds
张伟 by "张伟", "张" or "伟".

Whoever writes a customer's name keeps its terms with :func:`index_names`, in the same
transaction (crm_sync.customers for imports and the API, crm_sync.timeline for a customer made
from a call); rows go with their customer (ON DELETE CASCADE).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from crm_sync.bulk import insert_rows, one_of
from crm_sync.models import Base, Customer, CustomerTerm, Phone
from crm_sync.phones import PhoneNormalizer

TERM_LENGTH = 32  # characters of a word that are indexed; longer words are found by these
MAX_WORDS = 5  # words of a query that are used; more narrow nothing in practice
LIMIT = 20  # customers shown at most
RARE = 1000  # terms counted per word to find the rarest (more: common enough to go last)
_WORD = re.compile(r"\w+")
_DIAL = re.compile(r"[0-9+()\-. /]+")
_TOP = "\U0010ffff"  # above every character: the end of a prefix range


@dataclass(frozen=True, slots=True)
class Found:
    """One customer in the results, with what the agent needs to pick the right one."""

    id: int
    name: str
    kind: str
    company: str | None
    external_id: str | None
    email: str | None
    tier: str
    lifecycle: str
    phones: tuple[str, ...]
    matched: str  # "phone", "external_id" or "name"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "company": self.company,
            "external_id": self.external_id,
            "email": self.email,
            "tier": self.tier,
            "lifecycle": self.lifecycle,
            "phones": list(self.phones),
            "matched": self.matched,
        }


@dataclass(frozen=True, slots=True)
class Results:
    query: str
    found: tuple[Found, ...]
    more: bool  # there were more than shown: the agent should type more of the name


def fold(text: str) -> str:
    """One spelling of ``text`` for matching: compatibility form, no accents, case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare.casefold())


def _spaceless(char: str) -> bool:
    """A character of a script written without spaces between words (CJK)."""
    return unicodedata.name(char, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def terms(name: str) -> set[str]:
    """The terms a name is found by (module docstring)."""
    found: set[str] = set()
    for word in _WORD.findall(fold(name)):
        found.add(word[:TERM_LENGTH])
        found.update(c for c in word if _spaceless(c))
    return found


def query_words(query: str) -> list[str]:
    """The words of a query, folded as names are; longest first (the rarest, likely)."""
    words = {w[:TERM_LENGTH] for w in _WORD.findall(fold(query))}
    return sorted(words, key=lambda w: (-len(w), w))[:MAX_WORDS]


async def index_names(
    session: AsyncSession, names: Sequence[tuple[int, str]], *, fresh: bool = False
) -> None:
    """Replace the terms of these customers (id, name) by those of their names now;
    ``fresh``: customers just inserted, who have none yet."""
    if not names:
        return
    table = Base.metadata.tables[CustomerTerm.__tablename__]
    if not fresh:
        await session.execute(
            delete(table).where(one_of(session, table.c.customer_id, [i for i, _ in names]))
        )
    rows = sorted({(term, customer_id) for customer_id, name in names for term in terms(name)})
    await insert_rows(session, table, ("term", "customer_id"), rows)


class CustomerSearch:
    """Search over the store; every query reads at most ``LIMIT + 1`` customers."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], phones: PhoneNormalizer) -> None:
        self.sessions = sessions
        self.phones = phones

    async def find(self, query: str, *, limit: int = LIMIT) -> Results:
        printable = "".join(c if c.isprintable() else " " for c in query)  # no NUL to SQL
        text = " ".join(printable.split())[:200]
        if not text:
            return Results(text, (), False)
        async with self.sessions() as session:
            hits: dict[int, str] = {}
            if _DIAL.fullmatch(text):
                e164 = self.phones.to_e164(text)
                if e164 is not None:
                    owners = select(Phone.customer_id).where(Phone.e164 == e164).limit(limit + 1)
                    hits.update((i, "phone") for i in await session.scalars(owners))
            keyed = select(Customer.id).where(Customer.external_id == text[:64])
            hits.update((i, "external_id") for i in await session.scalars(keyed))
            room = limit + 1 - len(hits)
            words = query_words(text)
            if words and room > 0:
                for customer_id in await _named(session, words, room):
                    hits.setdefault(customer_id, "name")
            shown = list(hits)[:limit]
            found = await _details(session, shown, hits)
        return Results(text, found, len(hits) > limit)


async def _named(session: AsyncSession, words: list[str], room: int) -> list[int]:
    """Up to ``room`` customers with a term starting with each word. The scan runs along the
    terms index of the rarest word, in index order, and stops at ``room``: a common word
    (22,000 "smith…" of a million) costs what a rare one does; the other words are checked
    per customer (index on customer_id)."""
    if len(words) > 1:  # one word needs no count: its own scan says as much
        words = await _rarest_first(session, words)
        if not words:
            return []
    first, *others = words
    driver = aliased(CustomerTerm)
    query = select(driver.customer_id).where(*_starts(driver, first))
    for word in others:
        other = aliased(CustomerTerm)
        query = query.where(
            exists().where(other.customer_id == driver.customer_id, *_starts(other, word))
        )
    # a customer with two terms starting with the first word comes twice: read a few more
    query = query.order_by(driver.term, driver.customer_id).limit(room * 2)
    found = list(dict.fromkeys(await session.scalars(query)))
    return found[:room]


async def _rarest_first(session: AsyncSession, words: list[str]) -> list[str]:
    """The words by how many terms start with each (counted up to RARE), fewest first;
    none if one of them matches nobody (then neither does the query)."""
    counted = []
    for word in words:
        sample = select(CustomerTerm.customer_id).where(*_starts(CustomerTerm, word))
        seen = await session.scalar(select(func.count()).select_from(sample.limit(RARE).subquery()))
        if not seen:
            return []
        counted.append((seen, -len(word), word))
    return [word for *_, word in sorted(counted)]


def _starts(table: type[CustomerTerm], word: str) -> tuple[ColumnElement[bool], ...]:
    """``term`` starts with ``word``: a range of the b-tree, in every collation used here."""
    return (table.term >= word, table.term < word + _TOP)


async def _details(
    session: AsyncSession, ids: list[int], matched: dict[int, str]
) -> tuple[Found, ...]:
    if not ids:
        return ()
    company = Customer.__table__.alias("company")
    rows = await session.execute(
        select(
            Customer.id,
            Customer.name,
            Customer.kind,
            company.c.name,
            Customer.external_id,
            Customer.email,
            Customer.tier,
            Customer.lifecycle,
        )
        .outerjoin(company, company.c.id == Customer.company_id)
        .where(Customer.id.in_(ids))
    )
    by_id = {row[0]: row for row in rows}
    numbers: dict[int, list[str]] = {}
    listed = select(Phone.customer_id, Phone.e164).where(Phone.customer_id.in_(ids))
    for customer_id, e164 in (await session.execute(listed.order_by(Phone.id))).all():
        numbers.setdefault(customer_id, []).append(e164)
    found = []
    for i in ids:
        if i in by_id:
            _, name, kind, company_name, external_id, email, tier, lifecycle = by_id[i]
            found.append(
                Found(
                    i,
                    name,
                    kind,
                    company_name,
                    external_id,
                    email,
                    tier,
                    lifecycle,
                    tuple(numbers.get(i, ())),
                    matched[i],
                )
            )
    return tuple(found)
