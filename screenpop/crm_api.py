"""The external CRM's inbound REST API, ``/api/crm/…``: customers, orders, tickets, notes and
merges pushed by the CRM (details and the conflict rules: docs/crm-inbound.md).

Not a browser's API: no session cookie counts and no CSRF token is asked; every request
carries ``Authorization: Bearer <token>``, compared in constant time with ``[crm]
inbound_token``. Without a configured token every route answers 503 ``crm_api_off``; a
missing or wrong token 401. The token is checked before the body is read. Bodies are JSON
objects of at most MAX_BODY bytes (a batch MAX_BATCH_BODY, MAX_BATCH items), read by
screenpop.inputs (400 ``bad_json``: not JSON, too deep, a lone surrogate), validated field by
field (text by crm_sync.text's rule): 422 ``invalid_field`` naming the field, or, in a batch,
per item. Each request is
one transaction (crm_sync.inbound.write), answered after its commit; nothing written here
goes to the outbox (the CRM is not told what it said).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from crm_sync.customers import (
    CustomerError,
    CustomerIn,
    InteractionIn,
    Saved,
    save_customers,
    validate,
)
from crm_sync.inbound import link_external_id, save_entries, validate_entry, write
from crm_sync.merges import MergeError, MergeResult, merge_external
from crm_sync.records import customer_record, entry_record, merge_record
from crm_sync.store import CustomerStore
from crm_sync.text import FieldError
from screenpop.errors import ApiError, store_unavailable
from screenpop.inputs import json_body
from screenpop.keys import CLOCK, CRM_TOKEN, STORE

# the session middleware lets these through: they check their own bearer token
ROUTES = frozenset({"crm_customer", "crm_customers", "crm_entry", "crm_entries", "crm_merge"})
MAX_BATCH = 1000
MAX_BODY = 1024 * 1024
MAX_BATCH_BODY = 16 * 1024 * 1024
_KINDS = {"orders": "order", "tickets": "ticket", "notes": "note"}
_MERGE_ANSWERS = {
    "unknown": (404, "no_customer"),
    "refused": (422, "merge_refused"),
    "conflict": (409, "merged_elsewhere"),
}

T = TypeVar("T")
Parsed = tuple[T, int | None] | CustomerError  # a valid item (and its link), or why not


def add_routes(app: web.Application) -> None:
    kinds = "{kind:orders|tickets|notes}"
    app.router.add_put("/api/crm/customers/{external_id}", put_customer, name="crm_customer")
    app.router.add_post("/api/crm/customers", post_customers, name="crm_customers")
    app.router.add_put(f"/api/crm/{kinds}/{{external_id}}", put_entry, name="crm_entry")
    app.router.add_post(f"/api/crm/{kinds}", post_entries, name="crm_entries")
    app.router.add_post("/api/crm/merges", post_merge, name="crm_merge")


async def put_customer(request: web.Request) -> web.StreamResponse:
    """Upsert one customer, with its phones, by the external id of the URL."""
    store = _authorized(request)
    item = _customer(store, await _read(request, MAX_BODY), request.match_info["external_id"])
    if isinstance(item, CustomerError):
        raise _invalid(item)
    (result,) = await write(store.sessions, lambda s: _save_customers(request, s, [item]))
    if isinstance(result, CustomerError):
        raise _invalid(result)
    return web.json_response(_answer(item[0].external_id, result))


async def post_customers(request: web.Request) -> web.StreamResponse:
    """Upsert up to MAX_BATCH customers: ``{"items": [customer…]}``, a result per item."""
    store = _authorized(request)
    items = _items(await _read(request, MAX_BATCH_BODY))
    parsed = [_customer(store, item, None) for item in items]
    valid = [item for item in parsed if not isinstance(item, CustomerError)]
    saved = iter(await write(store.sessions, lambda s: _save_customers(request, s, valid)))
    results = [item if isinstance(item, CustomerError) else next(saved) for item in parsed]
    keys = [None if isinstance(p, CustomerError) else p[0].external_id for p in parsed]
    return web.json_response(_batch(items, keys, results))


async def put_entry(request: web.Request) -> web.StreamResponse:
    """Upsert one order, ticket or note by the CRM's id of the URL."""
    store = _authorized(request)
    kind = _KINDS[request.match_info["kind"]]
    try:
        entry = validate_entry(
            entry_record(kind, await _read(request, MAX_BODY), request.match_info["external_id"])
        )
    except CustomerError as exc:
        raise _invalid(exc) from exc
    (result,) = await write(store.sessions, lambda s: save_entries(s, [entry]))
    if isinstance(result, CustomerError):
        raise _invalid(result)
    return web.json_response(_answer(entry.external_id, result))


async def post_entries(request: web.Request) -> web.StreamResponse:
    """Upsert up to MAX_BATCH orders, tickets or notes: ``{"items": [entry…]}``."""
    store = _authorized(request)
    kind = _KINDS[request.match_info["kind"]]
    items = _items(await _read(request, MAX_BATCH_BODY))
    parsed: list[InteractionIn | CustomerError] = []
    for item in items:
        try:
            parsed.append(validate_entry(entry_record(kind, item)))
        except CustomerError as exc:
            parsed.append(exc)
    valid = [entry for entry in parsed if not isinstance(entry, CustomerError)]
    saved = iter(await write(store.sessions, lambda s: save_entries(s, valid)))
    results = [entry if isinstance(entry, CustomerError) else next(saved) for entry in parsed]
    keys = [None if isinstance(p, CustomerError) else p.external_id for p in parsed]
    return web.json_response(_batch(items, keys, results))


async def post_merge(request: web.Request) -> web.StreamResponse:
    """Fold a duplicate into a survivor: ``{"survivor_external_id", "merged_external_id",
    "by"?}``. 404 unknown, 409 merged into another survivor before, 422 cannot be merged."""
    store = _authorized(request)
    try:
        survivor, merged, by = merge_record(await _read(request, MAX_BODY))
    except FieldError as exc:
        raise _invalid(exc) from exc
    now = request.app[CLOCK]()
    try:
        result: MergeResult = await write(
            store.sessions, lambda s: merge_external(s, survivor, merged, by=by, now=now)
        )
    except MergeError as exc:
        status, error_id = _MERGE_ANSWERS[exc.reason]
        raise ApiError(status, error_id, str(exc)) from exc
    return web.json_response(
        {
            "status": "already_merged" if result.already else "merged",
            "merge_id": result.merge_id,
            "at": result.at.isoformat(),
            "survivor_id": result.survivor_id,
            "merged_id": result.merged_id,
            "merged_external_id": result.merged_external_id,
            "merged_name": result.merged_name,
            "moved": result.moved,
        }
    )


def _authorized(request: web.Request) -> CustomerStore:
    """The store, for a request that carries the CRM's token. Raises ApiError 503 (API off,
    or no store) or 401."""
    token = request.app[CRM_TOKEN]
    if not token:
        raise ApiError(
            503,
            "crm_api_off",
            "The CRM API is off: set [crm] inbound_token (or CTI_CRM_TOKEN) and restart.",
        )
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _same_secret(presented.strip(), token):
        raise ApiError(401, "unauthenticated", "Send the CRM token: Authorization: Bearer …")
    store = request.app[STORE]
    if store is None:
        raise store_unavailable()
    return store


def _same_secret(presented: str, token: str) -> bool:
    """Constant time, whatever the lengths (both are hashed to the same size first)."""
    digests = (hashlib.sha256(s.encode("utf-8", "replace")).digest() for s in (presented, token))
    return hmac.compare_digest(*digests)


async def _read(request: web.Request, limit: int) -> Any:
    """The JSON body, at most ``limit`` bytes, decimals kept exact (screenpop.inputs)."""
    return await json_body(request, limit, decimals=True)


def _items(body: Any) -> list[Any]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ApiError(
            422,
            "invalid_field",
            f"items: expected a list of 1 to {MAX_BATCH} objects.",
            field="items",
        )
    return items


def _customer(store: CustomerStore, body: Any, external_id: str | None) -> Parsed[CustomerIn]:
    try:
        record = customer_record(body, external_id)
        customer = validate(record.customer, store.phones)
    except CustomerError as exc:
        return exc
    if customer.external_id is None:
        return CustomerError("external_id", "required: the CRM's id of the customer")
    return customer, record.link_to


async def _save_customers(
    request: web.Request, session: AsyncSession, items: list[tuple[CustomerIn, int | None]]
) -> list[Saved | CustomerError]:
    """Link the customers that name a store id, then upsert them all; results in order."""
    linked: list[Saved | CustomerError | None] = []
    for customer, link_to in items:
        try:
            if link_to is not None:
                await link_external_id(
                    session, link_to, customer.external_id or "", version=customer.updated_at
                )
            linked.append(None)
        except CustomerError as exc:
            linked.append(exc)
    todo = [item[0] for item, problem in zip(items, linked, strict=True) if problem is None]
    saved = iter(await save_customers(session, todo, now=request.app[CLOCK]()))
    return [next(saved) if problem is None else problem for problem in linked]


def _answer(external_id: str | None, result: Saved) -> dict[str, Any]:
    return {"external_id": external_id, "status": result.change, "id": result.id}


def _batch(
    items: list[Any], keys: list[str | None], results: list[Saved | CustomerError]
) -> dict[str, Any]:
    answers: list[dict[str, Any]] = []
    for index, (item, key, result) in enumerate(zip(items, keys, results, strict=True)):
        if isinstance(result, CustomerError):
            given = item.get("external_id") if isinstance(item, dict) else None
            answers.append(
                {
                    "index": index,
                    "external_id": key or (given if isinstance(given, str) else None),
                    "status": "invalid",
                    "field": result.field,
                    "message": str(result),
                }
            )
        else:
            answers.append({"index": index, **_answer(key, result)})
    counts = Counter(answer["status"] for answer in answers)
    return {"results": answers, "counts": dict(sorted(counts.items()))}


def _invalid(error: FieldError) -> ApiError:
    return ApiError(422, "invalid_field", str(error), field=error.field)
