"""Liveness and readiness, for an orchestrator's probes and a load balancer.

``/healthz`` answers 200 while the process serves requests at all. ``/readyz`` answers 200
only when the customer store answers a trivial query within :data:`PROBE_TIMEOUT` and every
configured PBX's AMI link is logged in; otherwise 503, with each part's state and the reason
of the ones not ready. Neither needs a session: a probe cannot log in, and neither answer
carries customer data (screenpop.app.PUBLIC_ROUTES lists them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PROBE_TIMEOUT = 1.0  # seconds: a store slower than this to say "1" is not ready for pops
T = TypeVar("T")
_abandoned: set[asyncio.Future[Any]] = set()  # probes given up on, kept until they end


class Link(Protocol):
    """A PBX's AMI link as readiness sees it (cti.ami.AmiClient)."""

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...


async def within(seconds: float, work: Callable[[], Awaitable[T]]) -> T:
    """``work()``'s result, or TimeoutError after ``seconds``. Not ``asyncio.timeout``: that
    waits for the cancelled work's clean-up, which a stalled database may never finish, and a
    probe must answer on time whatever the store does."""
    task = asyncio.ensure_future(work())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():
            task.cancel()
            _abandoned.add(task)
            task.add_done_callback(_reap)
    if not done:
        raise TimeoutError(f"no answer within {seconds:g} s")
    return task.result()


def _reap(task: asyncio.Future[Any]) -> None:
    """An abandoned probe ended; its error is moot (the probe already said not ready)."""
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()


def store_answers(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    """The readiness check of a store: one connection from the pool, one ``SELECT 1``."""

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


class Readiness:
    """Whether this instance can do its work now: the store answers, every PBX is linked."""

    def __init__(
        self,
        store: Callable[[], Awaitable[None]] | None,
        links: Mapping[str, Link],
        *,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.store = store
        self.links = links
        self.timeout = timeout

    async def check(self) -> dict[str, Any]:
        """``{"ready": bool, "store": {"ready", "reason"?}, "pbx": {name: {...}}}``."""
        parts: dict[str, Any] = {"pbx": {name: _link(link) for name, link in self.links.items()}}
        if self.store is not None:
            parts["store"] = await self._store(self.store)
        ready = parts.get("store", {"ready": True})["ready"] and all(
            p["ready"] for p in parts["pbx"].values()
        )
        return {"ready": ready, **parts}

    async def _store(self, check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        try:
            await within(self.timeout, check)
        except TimeoutError as exc:
            return {"ready": False, "reason": str(exc)}
        except Exception as exc:  # any failure of the store means "not ready", with its reason
            return {"ready": False, "reason": f"{type(exc).__name__}: {exc}"[:500]}
        return {"ready": True}


def _link(link: Link) -> dict[str, Any]:
    if link.connected:
        return {"ready": True}
    return {"ready": False, "reason": link.last_error or "not connected yet"}


READINESS = web.AppKey("readiness", Readiness)


def add_routes(app: web.Application, readiness: Readiness) -> None:
    app[READINESS] = readiness
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def readyz(request: web.Request) -> web.Response:
    state = await request.app[READINESS].check()
    return web.json_response(state, status=200 if state["ready"] else 503)
