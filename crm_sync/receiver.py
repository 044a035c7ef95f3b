"""A reference webhook receiver: what an integrator's endpoint must do, runnable.

It checks the signature, takes one change or a ``{"batch": [...]}`` of them, answers 2xx for
a key it has already applied without applying it again (that is what makes at-least-once
delivery exactly-once), and keeps what arrived so
that the tests and ``cti bench`` can count it. ``faults`` lets a test make it fail the way
real CRMs do: an error status, a Retry-After, a response lost after the work was done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from crm_sync.relay import SIGNATURE_HEADER, verify

LATEST = 20  # changes the summary shows
Fault = Literal["ok", "error", "busy", "drop"]  # drop: applied, but the answer never sent


@dataclass(slots=True)
class Arrival:
    key: str
    customer: int | None
    sequence: int
    received: float  # the receiver's clock, in seconds since the epoch
    envelope: dict[str, Any]


@dataclass
class Receiver:
    secret: str
    faults: Callable[[int, str], Fault] = lambda _n, _key: "ok"  # (request number, first key)
    applied: dict[str, Arrival] = field(default_factory=dict)  # the first arrival per key
    requests: int = 0  # every request, duplicates and refused ones included
    duplicates: int = 0  # requests for a key already applied
    refused: int = 0  # bad signature or body
    clock: Callable[[], float] = time.time  # checks signatures' times, stamps arrivals

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        app.router.add_get("/", self.summary)
        return app

    async def summary(self, _request: web.Request) -> web.Response:
        """What arrived, newest first: what ``cti demo`` points at as its CRM."""
        latest = list(self.applied.values())[-LATEST:]
        return web.json_response(
            {
                "applied": len(self.applied),
                "duplicates": self.duplicates,
                "refused": self.refused,
                "latest": [a.envelope for a in reversed(latest)],
            },
            dumps=lambda value: json.dumps(value, ensure_ascii=False, indent=1),
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if not verify(self.secret, request.headers.get(SIGNATURE_HEADER, ""), body, self.clock()):
            self.refused += 1
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            content = json.loads(body)
            changes = content.get("batch", [content])
            keys = [str(change["id"]) for change in changes]
            if not keys:
                raise ValueError("an empty batch")
        except (ValueError, TypeError, KeyError, AttributeError):
            self.refused += 1
            return web.json_response({"error": "not a change or a batch of them"}, status=400)
        fault = self.faults(self.requests, keys[0])
        if fault == "error":
            return web.json_response({"error": "try later"}, status=500)
        if fault == "busy":
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "1"})
        for key, change in zip(keys, changes, strict=True):
            if key in self.applied:
                self.duplicates += 1
                continue
            customer = change.get("customer") or {}
            self.applied[key] = Arrival(
                key, customer.get("id"), int(change["sequence"]), self.clock(), change
            )
        if fault == "drop" and request.transport is not None:
            request.transport.abort()  # the work is done, the answer is lost
        return web.json_response({"ok": True})

    def order_kept(self) -> bool:
        """Per customer, were changes first applied in the order they were made?"""
        last: dict[int, int] = {}
        for arrival in self.applied.values():  # in the order they were applied
            if arrival.customer is None:
                continue
            if arrival.sequence < last.get(arrival.customer, 0):
                return False
            last[arrival.customer] = arrival.sequence
        return True
