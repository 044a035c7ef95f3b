"""The JSON API: the agent's calls, customers, and the outcome of a call.

Authorisation follows the call: an agent sees only the cards of calls offered to them and
writes the outcome only of calls they handled; a supervisor may do both for any call. A
customer's card is read under screenpop.access (an agent: the customers of their work and
searches; a supervisor: any, audited). An
outcome is answered 200 only after the database committed it, so "saved" on the page is
true; a retry with the same idempotency ``key`` gets the first answer and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.store import CustomerCard, CustomerStore, Lookup, StoreUnavailable
from crm_sync.text import FieldError
from crm_sync.timeline import MAX_NAME, OutcomeError, OutcomeIn, handled_by
from crm_sync.timeline import MAX_NOTES as MAX_NOTES  # views: the note form's limit
from screenpop import access
from screenpop.auth import Account
from screenpop.cards import Card, card_view
from screenpop.errors import ApiError, store_unavailable
from screenpop.inputs import ident, invalid, json_object, text, when
from screenpop.keys import ACCOUNTS, CLOCK, DISPOSITIONS, FOLLOWUP_OWNERS, POP, SESSION, STORE
from screenpop.pipeline import PopService

log = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z0-9_-]{8,40}")  # fits Interaction.external_id with its prefixes
LOOKUP_BUDGET = 2.0  # an API caller may wait longer than a ringing phone


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/me", me, name="api_me")
    app.router.add_get("/api/calls", calls, name="api_calls")
    app.router.add_get("/api/calls/{pbx}/{call_id}", call, name="api_call")
    app.router.add_post("/api/calls/{pbx}/{call_id}/outcome", outcome, name="api_outcome")
    app.router.add_post("/api/calls/{pbx}/{call_id}/dismiss", dismiss, name="api_dismiss")
    app.router.add_get("/api/customers", customers, name="api_customers")
    app.router.add_get(r"/api/customers/{customer_id:\d{1,18}}", customer, name="api_customer")


async def me(request: web.Request) -> web.StreamResponse:
    return web.json_response(request[SESSION].account.public())


async def calls(request: web.Request) -> web.StreamResponse:
    """The open cards of the agent (a supervisor: of every agent with an account)."""
    account = request[SESSION].account
    pop = request.app[POP]
    agents = (
        request.app[ACCOUNTS].agent_ids() if account.role == "supervisor" else (account.agent_id,)
    )
    cards = [c for agent in agents for c in pop.book.cards_for(agent)]
    body: dict[str, Any] = {"cards": _cards(request, cards)}
    if account.role == "agent":
        body["seq"] = pop.hub.last_seq(account.agent_id)
    return web.json_response(body)


async def call(request: web.Request) -> web.StreamResponse:
    """One call's open cards: an agent gets only their own, and only if it was offered to them."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    account = request[SESSION].account
    pop = request.app[POP]
    if account.role == "supervisor":
        if pop.book.caller_number(pbx, call_id) is None:
            raise ApiError(404, "no_call", "No such call.")
        agents = request.app[ACCOUNTS].agent_ids()
    else:
        agents = (account.agent_id,)
    cards = [
        c
        for agent in agents
        for c in pop.book.cards_for(agent)
        if (c.pbx, c.call_id) == (pbx, call_id)
    ]
    handled_by = pop.book.handled_by(pbx, call_id)
    if account.role == "agent" and not cards and account.agent_id not in handled_by:
        raise ApiError(403, "call_not_yours", "This call was not offered to you.")
    return web.json_response(
        {
            "pbx": pbx,
            "call_id": call_id,
            "handled_by": list(handled_by),
            "cards": _cards(request, cards),
        }
    )


async def customer_card(request: web.Request) -> CustomerCard:
    """The card of ``{customer_id}``. Raises ApiError 404, or 503 when the store is down."""
    store = request.app[STORE]
    if store is None:
        raise store_unavailable()
    customer_id = int(request.match_info["customer_id"])
    try:
        card = await store.card(customer_id, now=request.app[CLOCK]())
    except StoreUnavailable as exc:
        log.warning("customer %s not read: %s", customer_id, exc)
        raise store_unavailable() from exc
    if card is None:
        raise ApiError(404, "no_customer", f"There is no customer {customer_id}.")
    return card


async def customer(request: web.Request) -> web.StreamResponse:
    """One customer's card, if screenpop.access lets the account read it (403 otherwise)."""
    await access.check(request, int(request.match_info["customer_id"]))
    return _json(dataclasses.asdict(await customer_card(request)))


async def customers(request: web.Request) -> web.StreamResponse:
    """Who has this phone number: the same lookup as the pop, with its status. The agent may
    then read the customers found (screenpop.access: a search grant)."""
    store = request.app[STORE]
    phone = request.query.get("phone", "").strip()
    if not phone or len(phone) > 40:
        raise ApiError(400, "phone_required", "Give ?phone= (up to 40 characters).")
    if store is None:
        raise store_unavailable()
    result = await store.lookup(phone, now=request.app[CLOCK](), budget=LOOKUP_BUDGET)
    if result.status in ("timeout", "error"):
        raise store_unavailable()
    access.granted(request, (c.id for c in result.cards))
    body = dataclasses.asdict(result)
    body["display_number"] = store.phones.display(result.e164) if result.e164 else phone
    return _json(body)


async def outcome(request: web.Request) -> web.StreamResponse:
    """Record what the agent did with the call; 200 once committed. Raises ApiError: 400/422
    bad input, 403 not the agent's call, 503 the database failed (retry with the same key)."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    account = request[SESSION].account
    pop = request.app[POP]
    body = await json_object(request)
    store = request.app[STORE]
    if store is None:
        raise store_unavailable()
    handled = pop.book.handled_by(pbx, call_id) or await _stored_handler(store, pbx, call_id)
    agent = _agent_for(account, body, handled)
    lookup = _lookup(pop, pbx, call_id, agent)
    customer_id = ident(body, "customer_id")
    new_name = text(body, "new_customer_name", MAX_NAME)
    if customer_id is None and not new_name and lookup and len(lookup.cards) == 1:
        customer_id = lookup.cards[0].id  # the one match, when the client did not say
    number = pop.book.caller_number(pbx, call_id) or ""
    key, code = _key(body), _disposition(request, body)
    chosen = request.app[DISPOSITIONS].get(code)
    item = OutcomeIn(
        key=key,
        pbx=pbx,
        call_id=call_id,
        agent=agent,
        disposition=code,
        notes=text(body, "notes", MAX_NOTES, multiline=True) or "",
        customer_id=customer_id,
        new_customer_name=new_name,
        caller_e164=lookup.e164 if lookup and lookup.e164 else store.phones.to_e164(number),
        followup_due=when(body, "followup_due"),
        followup_owner=_followup_owner(request, body),
        label=chosen.label if chosen else None,
        needs_customer=chosen.needs_customer if chosen else True,
    )
    try:
        saved = await store.outcomes.save(item, now=request.app[CLOCK]())
    except OutcomeError as exc:
        raise ApiError(422, "outcome_rejected", str(exc)) from exc
    except FieldError as exc:
        raise invalid(exc.field, exc.problem) from exc
    except (SQLAlchemyError, OSError) as exc:
        log.warning("outcome of %s/%s not saved: %s", pbx, call_id, exc)
        raise store_unavailable() from exc
    pop.outcome_saved(pbx, call_id, agent)
    if saved.followup_id is not None and not saved.duplicate:
        owner = item.followup_owner or agent  # a queue's list is read when its agents look
        for told in {agent, owner} - {""}:
            pop.hub.publish(told, {"type": "followups", "id": saved.followup_id, "state": "open"})
    return web.json_response({"saved": True, **dataclasses.asdict(saved)})


async def dismiss(request: web.Request) -> web.StreamResponse:
    """Close, without an outcome, the agent's wrap-up card of a call that ended while their
    page was closed (``{"agent"?: str}`` for a supervisor). 409 ``not_dismissable`` for any
    other card: those the agent was held for need their outcome."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    account = request[SESSION].account
    pop = request.app[POP]
    body = await json_object(request) if request.can_read_body else {}
    agent = _agent_for(account, body, pop.book.handled_by(pbx, call_id))
    if not pop.dismiss(pbx, call_id, agent):
        raise ApiError(
            409,
            "not_dismissable",
            "Only a call that ended while your page was closed can be dismissed.",
        )
    log.info("%s dismissed the wrap-up of %s/%s without an outcome", agent, pbx, call_id)
    return web.json_response({"dismissed": True})


def _lookup(pop: PopService, pbx: str, call_id: str, agent: str) -> Lookup | None:
    """Who the caller was found to be: the pop forgets it when the call ends, the agent's
    wrap-up card still shows it."""
    card = pop.book.card(pbx, call_id, agent)
    return card.lookup if card is not None and card.lookup else pop.lookup_for(pbx, call_id)


async def _stored_handler(store: CustomerStore, pbx: str, call_id: str) -> tuple[str, ...]:
    """A call the pop no longer knows (the service restarted since it ended): the store's
    call row says who took it, so its outcome can still be recorded."""
    try:
        return await handled_by(store.sessions, pbx, call_id)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("call %s/%s not read: %s", pbx, call_id, exc)
        raise store_unavailable() from exc


def _agent_for(account: Account, body: Mapping[str, Any], handled_by: tuple[str, ...]) -> str:
    """Whose outcome this is: the agent's own, or (for a supervisor) the agent named."""
    if account.role == "supervisor":
        named = text(body, "agent", 64)
        if named is not None and named not in handled_by:
            raise ApiError(
                422, "invalid_field", "That agent did not handle the call.", field="agent"
            )
        return named or (handled_by[-1] if handled_by else account.agent_id or account.login)
    if account.agent_id not in handled_by:
        raise ApiError(
            403, "call_not_yours", "Only an agent who handled the call records its outcome."
        )
    return account.agent_id


def _key(body: Mapping[str, Any]) -> str:
    key = body.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise invalid("key", "expected an idempotency key of 8 to 40 letters, digits, _ or -")
    return key


def _disposition(request: web.Request, body: Mapping[str, Any]) -> str:
    code = body.get("disposition")
    if not isinstance(code, str) or request.app[DISPOSITIONS].get(code) is None:
        raise ApiError(
            422, "unknown_disposition", "Choose one of the disposition codes.", field="disposition"
        )
    return code


def _followup_owner(request: web.Request, body: Mapping[str, Any]) -> str | None:
    """An agent or a queue offered on the form; None: the agent who saves the outcome."""
    owner = text(body, "followup_owner", 64)
    if owner is not None and owner not in request.app[FOLLOWUP_OWNERS]():
        raise ApiError(
            422,
            "unknown_owner",
            "Give the follow-up to an agent or a queue.",
            field="followup_owner",
        )
    return owner


def _cards(request: web.Request, cards: list[Card]) -> list[dict[str, Any]]:
    store = request.app[STORE]
    phones = store.phones if store else None
    return [card_view(c, phones) for c in cards]


def _json(body: Any) -> web.Response:
    return web.json_response(body, dumps=lambda v: json.dumps(v, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")
