"""The relay: delivers the outbox to the external CRM's webhook, signed, retried, in order.

Each row is one HTTP POST of a JSON envelope (docs/crm-sync.md) with its idempotency key in
``Idempotency-Key`` and an HMAC-SHA256 signature over ``<timestamp>.<body>`` in
``X-CTI-Signature``. A 2xx answer marks the row delivered; anything else (an error status, a
timeout, a refused connection) is retried after an exponential, jittered delay, or after the
receiver's ``Retry-After``; after ``max_attempts`` failures the row is dead until an admin
revives it (``cti outbox retry``).

Delivery is at least once: a relay killed after the receiver answered but before the row was
marked sends it again once the lease ends, under the same key, so a receiver that honours the
key sees every change exactly once. Rows of different customers go out concurrently; a
customer's next row only after the previous one is delivered (or dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.outbox import Claimed, Outbox
from cti.waits import wait_set

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CTI-Signature"
RETRY_AFTER_CAP = 3600.0  # seconds: a receiver asking for longer is asked again within the hour
POLL = 0.2  # seconds between looks at an idle outbox (rows committed by any instance)
FLUSH = 0.02  # seconds a delivered mark may wait to be written with others
STORE_RETRY = 1.0  # seconds before the store is tried again after it failed


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
    ``<t>.<body>``, so a captured request cannot be replayed later under a new time."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does with the header (used by our tests and shown in the docs)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, stamp, body).partition(",v1=")[2]
    return abs(now - stamp) <= tolerance and hmac.compare_digest(expected, parts.get("v1", ""))


def retry_delay(attempt: int, initial: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds before the next try after ``attempt`` failures: doubling from ``initial`` up
    to ``cap``, each drawn in [half, whole] so that many rows failed together spread out."""
    whole: float = min(cap, initial * 2.0 ** min(attempt - 1, 60))
    return whole / 2 + rand() * whole / 2


def retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), RETRY_AFTER_CAP)


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    url: str
    secret: str
    timeout: float = 10.0
    max_attempts: int = 300
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    concurrency: int = 32  # requests in flight
    batch: int = 1  # changes per request

    @property
    def lease(self) -> float:
        """How long a claimed row stays out of other claims: one attempt and some margin."""
        return self.timeout + 5.0


class _Failure(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class Relay:
    """Runs until cancelled; a store or receiver that fails is retried, never fatal."""

    def __init__(
        self,
        outbox: Outbox,
        policy: RelayPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.outbox = outbox
        self.policy = policy
        self.clock = clock
        self.rand = rand
        self._flying: dict[asyncio.Task[None], list[int]] = {}  # requests under way: rows
        self._done: list[int] = []
        self._wake = asyncio.Event()  # a delivery ended or was marked: claim again

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.policy.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            flusher = asyncio.create_task(self._flush_loop())
            try:
                await self._claim_loop(http)
            finally:
                flusher.cancel()
                flying = [i for ids in self._flying.values() for i in ids]
                for task in self._flying:
                    task.cancel()
                await asyncio.gather(flusher, *self._flying, return_exceptions=True)
                await self._shutdown(flying)

    async def _claim_loop(self, http: aiohttp.ClientSession) -> None:
        while True:
            batch = self.policy.batch
            room = (self.policy.concurrency - len(self._flying)) * batch
            claimed: list[Claimed] = []
            if room * 2 >= self.policy.concurrency * batch or not self._flying:  # not one by one
                try:
                    claimed = await self.outbox.claim(self.clock(), room, self.policy.lease)
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("outbox: cannot claim rows: %s", exc)
                    await asyncio.sleep(STORE_RETRY)
                    continue
            for start in range(0, len(claimed), batch):
                rows = claimed[start : start + batch]
                task = asyncio.create_task(self._deliver(http, rows))
                self._flying[task] = [r.id for r in rows]
                task.add_done_callback(self._landed)
            if claimed and len(claimed) == room:
                await asyncio.sleep(0)  # more may be due: claim again once others ran
                continue
            await wait_set(self._wake, POLL)
            self._wake.clear()

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._flying.pop(task, None)
        self._wake.set()

    async def _deliver(self, http: aiohttp.ClientSession, rows: list[Claimed]) -> None:
        try:
            await self._post(http, rows)
        except _Failure as failure:
            for row in rows:
                await self._failed(row, str(failure), failure.wait)
            return
        self._done.extend(r.id for r in rows)

    async def _post(self, http: aiohttp.ClientSession, rows: list[Claimed]) -> None:
        """One change per request (``batch`` 1), or ``{"batch": [...]}`` of several customers'
        changes, each with its own key in ``id``."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.policy.batch == 1:
            (row,) = rows
            content: object = row.envelope
            headers.update(
                {
                    "Idempotency-Key": row.key,
                    "X-CTI-Topic": row.topic,
                    "X-CTI-Attempt": str(row.attempt),
                }
            )
        else:
            content = {"batch": [r.envelope for r in rows]}
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        headers[SIGNATURE_HEADER] = sign(self.policy.secret, int(self.clock().timestamp()), body)
        try:
            async with http.post(self.policy.url, data=body, headers=headers) as answer:
                await answer.read()
                if 200 <= answer.status < 300:
                    return
                wait = retry_after(answer.headers.get("Retry-After"), self.clock())
                raise _Failure(f"HTTP {answer.status} {answer.reason or ''}".strip(), wait)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Failure(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc

    async def _failed(self, row: Claimed, reason: str, wait: float | None) -> None:
        now = self.clock()
        if row.attempt >= self.policy.max_attempts:
            retry_at = None
            log.error(
                "outbox row %s (%s) dead after %s attempts: %s",
                row.id,
                row.key,
                row.attempt,
                reason,
            )
        else:
            delay = retry_delay(
                row.attempt, self.policy.backoff_initial, self.policy.backoff_max, self.rand
            )
            retry_at = now + timedelta(seconds=max(delay, wait or 0.0))
            log.info(
                "outbox row %s attempt %s failed (%s); next at %s",
                row.id,
                row.attempt,
                reason,
                retry_at,
            )
        try:
            await self.outbox.failed(row.id, reason, retry_at)
        except (SQLAlchemyError, OSError) as exc:  # the lease ends, the row is tried again
            log.warning("outbox: failure of row %s not recorded: %s", row.id, exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH)
            if not self._done:
                continue
            done, self._done = self._done, []
            try:
                await self.outbox.delivered(done, self.clock())
            except (SQLAlchemyError, OSError) as exc:
                log.warning("outbox: %s deliveries not marked yet: %s", len(done), exc)
                self._done.extend(done)  # sent again only if we die before the next try
                await asyncio.sleep(STORE_RETRY)
                continue
            self._wake.set()  # the customers of these rows may have their next one due

    async def _shutdown(self, stopped: list[int]) -> None:
        """Write what was delivered, and give back the leases of what was cut off."""
        done = set(self._done)
        with contextlib.suppress(SQLAlchemyError, OSError):
            if done:
                await self.outbox.delivered(sorted(done), self.clock())
            cut = [i for i in stopped if i not in done]
            if cut:
                await self.outbox.release(cut, self.clock())
