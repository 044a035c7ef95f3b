"""The audit log of member controls and customer reads: one committed row per control,
newest read first.

Rows are only ever added (and a denied row's count raised); none is pruned. Texts are cut to
their columns' sizes here, so a long error message from a PBX can never make the row (and so
the record of what happened) fail to be written; a character that is not printable (a CR/LF
of a hostile URL, say) is stored escaped (``\\r``, ``\\x00``, ``\\u2028``), and so is a
backslash, so what a row shows is never ambiguous. What Asterisk was sent is kept exactly, as
JSON, in ``sent``.

Denied attempts are bounded per actor, so a flood cannot bury the log: an attempt identical
to one of the same login within ``DENIED_WINDOW`` (same action, agent, queue, PBX, result)
raises that row's ``attempts`` and ``last_at`` instead of adding one; and once a login has
``DENIED_LIMIT`` denied attempts in the window, each further one is counted on its latest
denied row and reported as *limited* (the API answers 429). The count is read before the
attempt is written, with the caller's clock.

Reads are folded too (:func:`record_read`): a supervisor's reads of one customer within
``READ_WINDOW`` of the first are one row whose ``attempts`` counts them, so paging through a
customer's timeline does not write a row per request, and each read is still counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from crm_sync.models import AuditEntry

MAX_LIMIT = 500
DENIED_WINDOW = timedelta(seconds=60)
DENIED_LIMIT = 20  # denied attempts of one login per window before it is answered 429
READ_WINDOW = timedelta(minutes=10)  # one row per login, customer and this span of reads
OUTCOMES = ("ok", "denied", "refused", "failed")
Target = AsyncEngine | async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class Denied:
    """Where a denied attempt was counted: its row, that row's attempts, and whether the
    login was past its limit (the caller then answers 429)."""

    id: int
    attempts: int
    limited: bool


async def record(
    target: Target,
    *,
    at: datetime,
    login: str,
    role: str,
    action: str,
    agent: str,
    queue: str | None,
    pbx: str | None,
    detail: str,
    result: str,
    sent: Sequence[Mapping[str, str]] | None = None,
) -> int:
    """Commit one entry; its id. ``at`` must be timezone-aware (stored as UTC)."""
    entry = _entry(at, login, role, action, agent, queue, pbx, detail, result)
    entry.sent = [dict(a) for a in sent] if sent is not None else None
    async with _sessions(target)() as session, session.begin():
        session.add(entry)
        await session.flush()
        return entry.id


async def record_denied(
    target: Target,
    *,
    at: datetime,
    login: str,
    role: str,
    action: str,
    agent: str,
    queue: str | None,
    pbx: str | None,
    result: str,
    detail: str = "",
    window: timedelta = DENIED_WINDOW,
    limit: int = DENIED_LIMIT,
) -> Denied:
    """Count one denied attempt: on an identical recent row (``detail`` included), on the
    login's latest denied row once past ``limit``, else on a new row (see the module's
    docstring)."""
    entry = _entry(at, login, role, action, agent, queue, pbx, detail, result)
    since = entry.at - window
    recent = and_(
        AuditEntry.login == entry.login,
        AuditEntry.result.startswith("denied:"),
        func.coalesce(AuditEntry.last_at, AuditEntry.at) >= since,
    )
    same = and_(
        recent,
        AuditEntry.action == entry.action,
        AuditEntry.agent == entry.agent,
        _equal(AuditEntry.queue, entry.queue),
        _equal(AuditEntry.pbx, entry.pbx),
        AuditEntry.detail == entry.detail,
        AuditEntry.result == entry.result,
    )
    async with _sessions(target)() as session, session.begin():
        before = await session.scalar(
            select(func.coalesce(func.sum(AuditEntry.attempts), 0)).where(recent)
        )
        limited = int(before or 0) >= limit
        latest = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)
        row = await session.scalar(latest.where(same))
        if row is None and limited:
            row = await session.scalar(latest.where(recent))
        if row is None:
            session.add(entry)
            await session.flush()
            return Denied(entry.id, 1, limited)
        row.attempts += 1
        row.last_at = entry.at
        return Denied(row.id, row.attempts, limited)


async def record_read(
    target: Target,
    *,
    at: datetime,
    login: str,
    role: str,
    action: str,
    agent: str,
    detail: str,
    window: timedelta = READ_WINDOW,
) -> int:
    """Count one allowed read (result ``ok``): on the login's row of the same action and
    detail begun within ``window`` before ``at``, else on a new row; that row's id."""
    entry = _entry(at, login, role, action, agent, None, None, detail, "ok")
    same = and_(
        AuditEntry.login == entry.login,
        AuditEntry.action == entry.action,
        AuditEntry.agent == entry.agent,
        AuditEntry.detail == entry.detail,
        AuditEntry.result == "ok",
        AuditEntry.at >= entry.at - window,
    )
    async with _sessions(target)() as session, session.begin():
        row = await session.scalar(
            select(AuditEntry).where(same).order_by(AuditEntry.id.desc()).limit(1)
        )
        if row is None:
            session.add(entry)
            await session.flush()
            return entry.id
        row.attempts += 1
        row.last_at = entry.at
        return row.id


async def page(
    target: Target,
    limit: int = 100,
    *,
    before: int | None = None,
    login: str | None = None,
    action: str | None = None,
    agent: str | None = None,
    outcome: str | None = None,
) -> list[AuditEntry]:
    """Up to ``limit`` entries (at most MAX_LIMIT), newest first, with ``at`` in UTC: those
    listed after entry ``before`` (keyset paging: rows added meanwhile shift nothing), of
    that ``login``, ``action``, ``agent`` and ``outcome`` (one of OUTCOMES) when given."""
    query = select(AuditEntry)
    if before is not None:
        mark = select(AuditEntry.at).where(AuditEntry.id == before).scalar_subquery()
        query = query.where(
            or_(AuditEntry.at < mark, and_(AuditEntry.at == mark, AuditEntry.id < before))
        )
    if login is not None:
        query = query.where(AuditEntry.login == login)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if agent is not None:
        query = query.where(AuditEntry.agent == agent)
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: one of {', '.join(OUTCOMES)}")
        query = query.where(
            AuditEntry.result == "ok"
            if outcome == "ok"
            else AuditEntry.result.startswith(f"{outcome}:")
        )
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(
        max(1, min(limit, MAX_LIMIT))
    )
    async with _sessions(target)() as session:
        entries = list((await session.scalars(query)).all())
    for entry in entries:  # SQLite keeps no zone: what it holds is UTC
        if entry.at.tzinfo is None:
            entry.at = entry.at.replace(tzinfo=UTC)
        if entry.last_at is not None and entry.last_at.tzinfo is None:
            entry.last_at = entry.last_at.replace(tzinfo=UTC)
    return entries


async def recent(target: Target, limit: int = 100) -> list[AuditEntry]:
    """The last ``limit`` entries (at most MAX_LIMIT), newest first, with ``at`` in UTC."""
    return await page(target, limit)


def escaped(text: str) -> str:
    """``text`` with a backslash and every character that is not printable escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(c) for c in text)


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    return {"\r": "\\r", "\n": "\\n", "\t": "\\t"}.get(
        char, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    )


def _entry(
    at: datetime,
    login: str,
    role: str,
    action: str,
    agent: str,
    queue: str | None,
    pbx: str | None,
    detail: str,
    result: str,
) -> AuditEntry:
    if at.tzinfo is None:
        raise ValueError("an audit time needs its time zone")
    at = at.astimezone(UTC)
    return AuditEntry(
        at=at,
        last_at=at,
        attempts=1,
        login=escaped(login)[:64],
        role=escaped(role)[:16],
        action=escaped(action)[:16],
        agent=escaped(agent)[:64],
        queue=escaped(queue)[:64] if queue is not None else None,
        pbx=escaped(pbx)[:64] if pbx is not None else None,
        detail=escaped(detail)[:200],
        result=escaped(result)[:300],
    )


def _equal(column: InstrumentedAttribute[str | None], value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _sessions(target: Target) -> async_sessionmaker[AsyncSession]:
    if isinstance(target, AsyncEngine):
        return async_sessionmaker(target, expire_on_commit=False)
    return target
