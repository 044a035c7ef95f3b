"""Finding a customer without a call: the search page and its JSON twin.

The header of every page has the search box, so an agent can look anyone up between calls
(by name, number or CRM id: crm_sync.search) and open their page: what a search shows, the
agent may read for an hour (screenpop.access).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.search import CustomerSearch, Results
from screenpop import access
from screenpop.errors import store_unavailable
from screenpop.keys import SESSION, STORE

log = logging.getLogger(__name__)
MAX_QUERY = 200  # characters of a query that are read


def add_routes(app: web.Application) -> None:
    app.router.add_get("/search", search_page, name="search")
    app.router.add_get("/api/customers/search", search_api, name="api_search")


async def _find(request: web.Request) -> Results:
    store = request.app[STORE]
    if store is None:
        raise store_unavailable()
    query = request.query.get("q", "")[: MAX_QUERY * 2]
    try:
        results = await CustomerSearch(store.sessions, store.phones).find(query)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("customer search %r failed: %s", query[:40], exc)
        raise store_unavailable() from exc
    access.granted(request, (f.id for f in results.found))
    return results


async def search_page(request: web.Request) -> web.StreamResponse:
    results = await _find(request)
    store = request.app[STORE]
    session = request[SESSION]
    display = store.phones.display if store is not None else str
    context: dict[str, Any] = {
        "account": session.account,
        "csrf": session.csrf,
        "query": results.query,
        "results": results,
        "phones": {f.id: [display(n) for n in f.phones] for f in results.found},
    }
    return aiohttp_jinja2.render_template("search.html", request, context)


async def search_api(request: web.Request) -> web.StreamResponse:
    """``?q=``: up to 20 customers, phone and CRM id matches first, then by name."""
    results = await _find(request)
    store = request.app[STORE]
    assert store is not None  # _find answered 503 otherwise
    return web.json_response(
        {
            "query": results.query,
            "more": results.more,
            "customers": [
                {**f.to_json(), "phones_shown": [store.phones.display(p) for p in f.phones]}
                for f in results.found
            ],
        }
    )
