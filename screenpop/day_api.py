"""The agent's own day: ``GET /api/agents/me/day`` for "My day" on the agent page.

Two sources make it: the store's calls of known customers and the outcomes the agent saved
(crm_sync.workday), and the pop's wrap-up cards of the agent, the calls that ended with no
outcome yet (unknown callers included, whom the store never saw). A wrap-up card still open
from before the day is listed too: unfinished work does not vanish at midnight. The day is
the browser's (its bounds, with their offset); the server never guesses it from its clock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.workday import DayCall, agent_day
from screenpop.cards import Card, card_view
from screenpop.errors import ApiError
from screenpop.keys import DISPOSITIONS, POP, SESSION, STORE

log = logging.getLogger(__name__)
MAX_DAY = timedelta(hours=26)  # a day is 23 to 25 hours long across a DST change


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/agents/me/day", my_day, name="api_my_day")


async def my_day(request: web.Request) -> web.StreamResponse:
    """``?day_start=…&day_end=…`` (ISO with offset, at most 26 h apart): the agent's calls,
    newest first, each with its outcome or ``outcome_missing`` and how to finish it.
    ``store_ok`` false: the store could not be read, only the pop's calls are listed."""
    account = request[SESSION].account
    agent = account.agent_id
    if not agent:
        raise ApiError(409, "no_agent_line", "This account has no agent line: it takes no calls.")
    start, end = day_bounds(request.query)
    store = request.app[STORE]
    stored: list[DayCall] = []
    store_ok = store is not None
    if store is not None:
        try:
            stored = await agent_day(store.sessions, agent, start=start, end=end)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("the day of %s not read: %s", agent, exc)
            store_ok = False
    pop = request.app[POP]
    labels = {d.code: d.label for d in request.app[DISPOSITIONS].items}
    phones = store.phones if store is not None else None
    open_cards = {
        c.call_id: c for c in pop.book.cards_for(agent) if c.state == "wrapup" and _at(c) < end
    }
    calls: list[dict[str, Any]] = []
    for call in stored:
        card = open_cards.pop(call.call_id, None)  # the store's row says more of the call
        card = card if call.outcome is None else None
        item = _stored(call, labels, card)
        if call.customer_id is None and card is not None:  # the store keeps no caller number
            item["number"] = card_view(card, phones)["display_number"] or None
        if call.outcome is None:
            pbx = call.pbx or (card.pbx if card else None)
            # the agent's own call row: its outcome is taken even after a restart (api.outcome)
            item["finishable"] = pbx is not None
        calls.append(item)
    calls += [_card(c, card_view(c, phones)) for c in open_cards.values()]
    calls.sort(key=lambda item: item["at"], reverse=True)
    return web.json_response({"calls": calls, "store_ok": store_ok, "agent": agent})


def day_bounds(query: Mapping[str, str]) -> tuple[datetime, datetime]:
    """``day_start`` and ``day_end`` (ISO with the browser's offset). Raises ApiError 422."""
    bounds = []
    for name in ("day_start", "day_end"):
        message = f"{name}: the agent's day bound, ISO with its UTC offset"
        try:
            value = datetime.fromisoformat(query.get(name, ""))
        except ValueError as exc:
            raise ApiError(422, "invalid_field", message, field=name) from exc
        if value.tzinfo is None:
            raise ApiError(422, "invalid_field", message, field=name)
        bounds.append(value.astimezone(UTC))
    start, end = bounds
    if not timedelta(0) < end - start <= MAX_DAY:
        message = "day_end: after day_start, at most 26 hours later"
        raise ApiError(422, "invalid_field", message, field="day_end")
    return start, end


def _stored(call: DayCall, labels: dict[str, str], card: Card | None) -> dict[str, Any]:
    outcome = call.outcome
    return {
        "at": call.at.isoformat(),
        "pbx": call.pbx or (card.pbx if card else None),
        "call_id": call.call_id,
        "customer": None
        if call.customer_id is None
        else {"id": call.customer_id, "name": call.customer_name},
        "number": None,
        "direction": call.direction,
        "talk_seconds": call.talk_seconds,
        "outcome": None
        if outcome is None
        else {
            "disposition": outcome.disposition,
            "label": labels.get(outcome.disposition, outcome.disposition),
            "notes": outcome.notes,
            "saved_at": outcome.saved_at.isoformat(),
        },
        "outcome_missing": outcome is None,
        "card_id": card.id if card else None,
        "away": card.away if card else False,
        "finishable": False,
    }


def _card(card: Card, view: dict[str, Any]) -> dict[str, Any]:
    """A wrap-up card the store has no row of: an unknown caller, or the store is behind."""
    lookup = card.lookup
    found = lookup.cards[0] if lookup and lookup.status == "found" else None
    return {
        "at": _at(card).isoformat(),
        "pbx": card.pbx,
        "call_id": card.call_id,
        "customer": {"id": found.id, "name": found.name} if found else None,
        "number": view["display_number"] or None,
        "direction": "inbound",  # the pop's cards are of calls that rang the agent
        "talk_seconds": None,
        "outcome": None,
        "outcome_missing": True,
        "card_id": card.id,
        "away": card.away,
        "finishable": True,  # a wrap-up card: the agent handled the call
    }


def _at(card: Card) -> datetime:
    """When the card's call started (its first event), as the store's call rows say."""
    first = next((at for at, _ in card.history if at is not None), None)
    seconds = first or card.queued_at or card.ringing_at or card.answered_at or 0.0
    return datetime.fromtimestamp(seconds, UTC)
