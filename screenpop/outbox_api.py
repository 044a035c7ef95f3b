"""The outbox for supervisors: what the CRM has not heard yet, and sending dead rows again.

The same view as ``cti outbox``, for whoever watches the center from a browser. Reading and
reviving rows are supervisors' work; a revived row is audited like the other controls.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.audit import record
from crm_sync.models import OutboxRow
from crm_sync.outbox import Outbox
from crm_sync.store import CustomerStore
from screenpop.errors import ApiError, store_unavailable
from screenpop.inputs import MAX_ID, json_object
from screenpop.keys import CLOCK, SESSION, STORE

STATES = ("dead", "pending", "delivered")
MAX_LIMIT = 500


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/outbox", listing, name="api_outbox")
    app.router.add_post("/api/outbox/retry", retry, name="api_outbox_retry")


async def listing(request: web.Request) -> web.StreamResponse:
    """``?state=dead|pending|delivered`` (default dead), ``?limit=1..500`` (default 100):
    the counts per state and the newest rows in that state."""
    outbox = _outbox(request)
    state = request.query.get("state", "dead")
    if state not in STATES:
        raise _invalid("state", "one of " + ", ".join(STATES))
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _invalid("limit", f"a whole number from 1 to {MAX_LIMIT}")
    try:
        counts = await outbox.counts()
        rows = await outbox.rows(state, int(raw))
    except (SQLAlchemyError, OSError) as exc:
        raise store_unavailable() from exc
    oldest = counts.oldest_pending
    return web.json_response(
        {
            "counts": {
                "pending": counts.pending,
                "delivered": counts.delivered,
                "dead": counts.dead,
            },
            "oldest_pending": oldest.isoformat() if oldest else None,
            "rows": [_row(r) for r in rows],
        }
    )


async def retry(request: web.Request) -> web.StreamResponse:
    """``{"ids": [n, …]}`` or ``{"all_dead": true}``: dead rows go out again."""
    outbox = _outbox(request)
    body = await json_object(request)
    ids = body.get("ids")
    everything = body.get("all_dead") is True
    valid = isinstance(ids, list) and 0 < len(ids) <= MAX_LIMIT
    if not everything and not (valid and all(_row_id(i) for i in ids)):  # type: ignore[union-attr]
        raise _invalid("ids", f'a list of 1 to {MAX_LIMIT} row ids, or "all_dead": true')
    account = request[SESSION].account
    now = request.app[CLOCK]()
    try:
        revived = await outbox.retry(None if everything else ids, now)
        await record(
            outbox.sessions,
            at=now,
            login=account.login,
            role=account.role,
            action="outbox_retry",
            agent="",
            queue=None,
            pbx=None,
            detail="all dead rows" if everything else f"rows {ids}"[:200],
            result=f"ok: {revived} revived",
        )
    except (SQLAlchemyError, OSError) as exc:
        raise store_unavailable() from exc
    return web.json_response({"revived": revived})


def _outbox(request: web.Request) -> Outbox:
    if request[SESSION].account.role != "supervisor":
        raise ApiError(403, "supervisors_only", "Only supervisors may see the CRM outbox.")
    store: CustomerStore | None = request.app[STORE]
    if store is None:
        raise store_unavailable()
    return Outbox(store.sessions)


def _row(row: OutboxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "topic": row.topic,
        "customer_id": row.customer_id,
        "state": row.state,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "last_error": row.last_error,
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


def _invalid(field: str, expected: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {expected}.", field=field)


def _row_id(value: object) -> bool:
    """A row id the database can hold (a bigger one overflowed SQLite: a 500 before)."""
    return type(value) is int and 1 <= value <= MAX_ID
