"""Who may use the screen pop: accounts, password hashes, sessions and login throttling.

Passwords are kept only as scrypt hashes (:mod:`cti.hashing`), checked in constant time; an
unknown login costs the same scrypt run as a known one, so timing does not tell which logins
exist. The browser holds only a random token (in an HttpOnly cookie); the server keeps each
session in memory and, given the store, in its ``web_sessions`` table under the token's
sha256, so a restart logs nobody out (:class:`SessionStore`). Each session has its own CSRF
token, and a session unused for ``idle`` seconds is gone. The WebSockets a session opened
are attached to it, so logging out (or expiry) also ends the live push.

Run ``python -m screenpop.auth`` to hash a password for an accounts file.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from aiohttp import web

from crm_sync.sessions import SessionRow, SessionTable
from crm_sync.store import StoreUnavailable
from cti.hashing import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    HashError,
    hash_password,
    parse_hash,
    verify_password,
)
from cti.settings import AgentSettings

log = logging.getLogger(__name__)

Role = Literal["agent", "supervisor"]
ROLES: tuple[Role, ...] = ("agent", "supervisor")
_DEVICE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/[^\s,\x00-\x1f\x7f]{1,60}")  # Tech/resource


class AccountsError(ValueError):
    """An accounts file or password hash is invalid (message says where)."""


@dataclass(frozen=True)
class Account:
    """One person who logs in. ``agent_id`` is the agent id the call model uses for them;
    ``device`` their own phone (``PJSIP/2001``), the one a supervisor listens to calls on."""

    login: str
    name: str
    agent_id: str
    role: Role
    password_hash: str = field(repr=False)
    device: str = ""

    def public(self) -> dict[str, str]:
        """What the API may show about the account (never the hash)."""
        return {
            "login": self.login,
            "name": self.name,
            "agent_id": self.agent_id,
            "role": self.role,
        }


class Accounts:
    """The accounts, by login (logins are case-insensitive)."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self._by_login: dict[str, Account] = {}
        for account in accounts:
            _check(account)
            key = account.login.casefold()
            if key in self._by_login:
                raise AccountsError(f"login {account.login!r} appears twice")
            self._by_login[key] = account
        # an unknown login is checked against this, so it takes as long as a known one
        costliest = max((parse_hash(a.password_hash)[:3] for a in self), default=None)
        n, r, p = costliest or (SCRYPT_N, SCRYPT_R, SCRYPT_P)
        self._decoy = hash_password(secrets.token_urlsafe(16), n=n, r=r, p=p)

    @classmethod
    def load(cls, path: str | Path) -> Accounts:
        """Read ``[[accounts]]`` tables (login, name, agent_id, role, password_hash, device)
        from a TOML file. Raises AccountsError."""
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AccountsError(f"cannot read accounts file {path}: {exc}") from exc
        return cls(_account(i, body) for i, body in enumerate(raw.get("accounts", []), 1))

    @classmethod
    def for_agents(cls, agents: Iterable[AgentSettings], password: str) -> Accounts:
        """One agent account per configured agent (login: the id in lower case), all with the
        same password: what a demo needs, not a production set-up."""
        shared = hash_password(password)
        return cls(Account(a.id.lower(), a.name or a.id, a.id, "agent", shared) for a in agents)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._by_login.values())

    def get(self, login: str) -> Account | None:
        return self._by_login.get(login.casefold())

    def verify(self, login: str, password: str) -> Account | None:
        """The account if the password is right, else None; same cost whether or not the
        login exists. Slow on purpose (scrypt): call it off the event loop."""
        account = self.get(login)
        ok = verify_password(password, account.password_hash if account else self._decoy)
        return account if ok and account is not None else None

    def agent_ids(self) -> tuple[str, ...]:
        """Every agent id with an account (the agents a supervisor may look at)."""
        return tuple(dict.fromkeys(a.agent_id for a in self if a.agent_id))


@dataclass(eq=False)
class Session:
    """A logged-in browser. ``sockets`` are its open WebSockets (closed with the session);
    ``checked`` is when the store's table last confirmed it, ``stored_seen`` the last use the
    table holds (both by the store's clock; unused without a table)."""

    token: str
    account: Account
    csrf: str
    last_seen: float
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    checked: float = 0.0
    stored_seen: float = 0.0

    @property
    def token_hash(self) -> str:
        return token_hash(self.token)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def token_hash(token: str) -> str:
    """What the table keeps of a token. A plain sha256 is enough: the token is 256 random
    bits, so there is nothing to guess that salt or a slow hash would protect."""
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Sessions by token. Without a ``table`` they live in memory only (a restart logs all
    out); with one, each is also a row of the store (the token's hash, never the token), so
    they survive a restart, and memory is a cache in front of the table.

    The cache trusts a session for ``cache_age`` seconds after the table last confirmed it;
    :meth:`run` re-confirms all cached sessions in one query every ``cache_age / 2`` s and
    writes when they were last used (at most every ``touch_every`` s each), so the hot path
    (API calls, WebSocket pings) does not touch the database. A logout on another instance
    deletes the row: this instance refuses the session within ``cache_age`` s, and its
    sockets close at their next ping. While the store is down, cached sessions go on (their
    revocation elsewhere waits for its return); a token not in the cache cannot be checked,
    and :meth:`load` raises StoreUnavailable rather than pretend it is unknown. An account
    gone from the configuration, or whose role or agent id changed, ends its sessions.
    """

    def __init__(
        self,
        accounts: Accounts,
        table: SessionTable | None = None,
        *,
        idle: float = 8 * 3600,
        cache_age: float = 30.0,
        touch_every: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.table = table
        self.idle = idle
        self.cache_age = cache_age
        self.touch_every = touch_every
        self._clock = clock  # wall clock: the table's times outlive the process
        self._sessions: dict[str, Session] = {}

    async def create(self, account: Account) -> Session:
        """A new session (and its row). Raises StoreUnavailable, and then there is none."""
        now = self._clock()
        self._sweep(now)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session = Session(token, account, csrf, now, checked=now, stored_seen=now)
        if self.table is not None:
            row = SessionRow(
                session.token_hash,
                account.login,
                account.role,
                account.agent_id,
                csrf,
                _utc(now),
                _utc(now),
            )
            await self.table.add(row, expired_before=_utc(now - self.idle))
        self._sessions[token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token`` in memory (and mark it used), or None. Never asks
        the table: the open sockets check their session with this."""
        session = self._sessions.get(token) if token else None
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle:
            del self._sessions[session.token]
            return None
        session.last_seen = now
        return session

    async def load(self, token: str | None) -> Session | None:
        """The live session for ``token`` (marked used), or None: from memory while the
        table's word on it is fresh, else from the table. Raises StoreUnavailable when only
        the table could tell."""
        session = self.get(token)
        if not token or self.table is None:
            return session
        if session is not None and self._clock() - session.checked <= self.cache_age:
            return session
        try:
            rows = await self.table.find([token_hash(token)])
        except StoreUnavailable:
            if session is None:
                raise
            return session  # known here; only a logout elsewhere could have ended it
        return await self._confirmed(self.table, token, session, rows.get(token_hash(token)))

    async def end(self, token: str | None) -> Session | None:
        """End a session everywhere: its row first (StoreUnavailable: nothing has ended),
        then here. The session it was, if this instance had it."""
        if not token:
            return None
        if self.table is not None:
            await self.table.remove(token_hash(token))
        return self.drop(token)

    def drop(self, token: str | None) -> Session | None:
        """Forget a session here only (its row, if any, stays)."""
        return self._sessions.pop(token, None) if token else None

    async def run(self) -> None:
        """Keep the cache honest while the service runs (see the class)."""
        while True:
            await asyncio.sleep(self.cache_age / 2)
            await self.refresh()

    async def refresh(self) -> None:
        """One pass: drop the cached sessions whose rows are gone (ended elsewhere, or swept),
        mark the rest confirmed, and write the last use of those used since it was written."""
        if self.table is None:
            return
        now = self._clock()
        self._sweep(now)
        cached = list(self._sessions.values())
        try:
            rows = await self.table.find([s.token_hash for s in cached])
        except StoreUnavailable as exc:
            log.warning("sessions not re-checked: the store is unavailable (%s)", exc)
            return
        due: dict[str, datetime] = {}
        for session in cached:
            row = rows.get(session.token_hash)
            if row is None:
                if self._sessions.get(session.token) is session:
                    del self._sessions[session.token]
                continue
            session.checked = now
            session.stored_seen = max(session.stored_seen, row.last_seen.timestamp())
            session.last_seen = max(session.last_seen, session.stored_seen)
            if session.last_seen - session.stored_seen >= self.touch_every:
                due[session.token_hash] = _utc(session.last_seen)
        try:
            await self.table.touch(due)
        except StoreUnavailable as exc:
            log.warning("last use of sessions not written: the store is unavailable (%s)", exc)
            return
        for session in cached:
            if session.token_hash in due:
                session.stored_seen = due[session.token_hash].timestamp()

    def sockets(self) -> list[web.WebSocketResponse]:
        return [ws for s in self._sessions.values() for ws in s.sockets]

    def __len__(self) -> int:
        return len(self._sessions)

    async def _confirmed(
        self, table: SessionTable, token: str, cached: Session | None, row: SessionRow | None
    ) -> Session | None:
        """``row`` is the table's word on ``token``: the session it describes, if still live
        and still its account's, else None (and the stale row is removed)."""
        now = self._clock()
        if row is None:
            self.drop(token)  # ended elsewhere
            return None
        seen = max(row.last_seen.timestamp(), cached.last_seen if cached else 0.0)
        account = self.accounts.get(row.login)
        if (
            now - seen > self.idle
            or account is None
            or (account.role, account.agent_id) != (row.role, row.agent_id)
        ):
            self.drop(token)
            with contextlib.suppress(StoreUnavailable):  # refused anyway; the sweep retries
                await table.remove(row.token_hash)
            return None
        session = cached or Session(token, account, row.csrf, now)
        session.last_seen = now
        session.checked = now
        session.stored_seen = max(session.stored_seen, row.last_seen.timestamp())
        self._sessions[token] = session
        return session

    def _sweep(self, now: float) -> None:
        cutoff = now - self.idle
        for token in [t for t, s in self._sessions.items() if s.last_seen < cutoff]:
            del self._sessions[token]


class Throttle(NamedTuple):
    """One budget, a bucket of failures: ``free`` fit, then each further attempt waits
    ``first`` s after the last, doubling up to ``cap`` (never a hard lock). One failure
    leaks out every ``leak`` s, so whoever tries slower than that is never slowed."""

    free: int
    first: float
    cap: float
    leak: float

    def wait(self, count: int) -> float:
        """Seconds the next attempt waits after the last, with ``count`` in the bucket."""
        if count < self.free:
            return 0.0
        return min(self.cap, self.first * (1 << min(count - self.free, 32)))


# The defaults. A person mistyping is hardly slowed, a guesser soon is. One address at its
# pair's cap (a try a minute) drains slower than the per-login bucket leaks (two a minute),
# so no single stranger can slow a login for anyone else; it takes many addresses at once.
PAIR = Throttle(free=5, first=1.0, cap=60.0, leak=300.0)
# a center's agents often share one address (NAT, a proxy): at the start of a shift a hundred
# log in at once, never trusted from it yet; past that one place gets one guess a minute
ADDRESS = Throttle(free=100, first=1.0, cap=60.0, leak=60.0)
LOGIN = Throttle(free=50, first=1.0, cap=30.0, leak=30.0)
TRUST = 30 * 24 * 3600.0  # how long a login that worked from an address is remembered


@dataclass(frozen=True)
class Attempt:
    """One login attempt, as :meth:`LoginLimiter.start` judged it: ``wait`` > 0 means refused
    (retry in that many seconds, nothing was charged)."""

    login: str
    client: str
    wait: float
    trusted: bool


class _Counts:
    """One throttle's buckets by key: ``(count, last charged, last leaked)``, in bounded
    memory (the least recently charged key is forgotten first, an empty one at once)."""

    def __init__(self, throttle: Throttle, max_keys: int) -> None:
        self.throttle = throttle
        self.max_keys = max_keys
        self.seen: dict[Hashable, tuple[int, float, float]] = {}

    def wait(self, key: Hashable, now: float) -> float:
        count, last, _ = self._get(key, now)
        return max(0.0, last + self.throttle.wait(count) - now)

    def charge(self, key: Hashable, now: float) -> None:
        count, _, leaked = self._get(key, now)
        self.seen.pop(key, None)
        self.seen[key] = (count + 1, now, leaked)  # most recent last, for the eviction order
        _bound(self.seen, self.max_keys)

    def refund(self, key: Hashable, now: float) -> None:
        count, last, leaked = self._get(key, now)
        if count > 1:
            self.seen[key] = (count - 1, last, leaked)
        else:
            self.seen.pop(key, None)

    def clear(self, key: Hashable) -> None:
        self.seen.pop(key, None)

    def _get(self, key: Hashable, now: float) -> tuple[int, float, float]:
        """The bucket as of ``now``, after what leaked out since (whole failures only)."""
        count, last, leaked = self.seen.get(key, (0, now, now))
        steps = int((now - leaked) // self.throttle.leak)
        if steps >= count:
            self.seen.pop(key, None)
            return 0, now, now
        return count - steps, last, leaked + steps * self.throttle.leak


class LoginLimiter:
    """Slows password guessing without letting a stranger lock anyone out.

    An attempt is charged *before* its password is checked (:meth:`start`) and refunded only
    when it succeeds, so an attempt in flight counts as a failure: a burst of parallel
    requests gets no more password checks than the budget, however slow scrypt is. A refused
    attempt is not charged, so hammering lengthens nobody's wait. Three budgets, each a
    :class:`Throttle` (a few free failures, waits that double up to a cap, a steady leak):

    - per (login, client address), the main one: a stranger's failures slow the stranger.
    - per client address, across logins: one place spraying many logins.
    - per login, across addresses: a large bucket that leaks faster than one address at its
      cap can fill it, so only many addresses at once slow a login, and then to one try every
      ``cap`` s, never a lock.

    A pair that logged in within ``trust`` s skips the last two: the supervisor at her usual
    desk logs in at once even while a botnet holds her login at its cap (from a new address
    she races the botnet for the next try). The client address is ``request.remote`` (IPv6
    by its /64, what one host usually holds), never a header a client could forge; behind a
    reverse proxy every client is the proxy. Counted whether or not the login exists, so a
    refusal reveals nothing. State is in memory, per process, bounded (``max_keys`` per
    budget, the least recently charged forgotten first).
    """

    def __init__(
        self,
        *,
        pair: Throttle = PAIR,
        address: Throttle = ADDRESS,
        login: Throttle = LOGIN,
        trust: float = TRUST,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pairs = _Counts(pair, max_keys)
        self._addresses = _Counts(address, max_keys)
        self._logins = _Counts(login, max_keys)
        self.trust = trust
        self.max_keys = max_keys
        self._trusted: dict[tuple[str, str], float] = {}  # pair -> when it last logged in
        self._clock = clock

    def start(self, login: str, address: str | None) -> Attempt:
        """Judge an attempt and, unless refused, charge it to every budget it falls under."""
        now = self._clock()
        key, client = login.casefold(), _client(address)
        since = self._trusted.get((key, client))
        trusted = since is not None and now - since < self.trust
        budgets: list[tuple[_Counts, Hashable]] = [(self._pairs, (key, client))]
        if not trusted:
            budgets += [(self._addresses, client), (self._logins, key)]
        wait = max(counts.wait(k, now) for counts, k in budgets)
        if wait == 0:
            for counts, k in budgets:
                counts.charge(k, now)
        return Attempt(key, client, wait, trusted)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: refund the attempt, forget the pair's failures and trust
        the pair from now on."""
        if attempt.wait > 0:
            return  # refused: nothing was charged
        now = self._clock()
        pair = (attempt.login, attempt.client)
        self._pairs.clear(pair)
        if not attempt.trusted:
            self._addresses.refund(attempt.client, now)
            self._logins.refund(attempt.login, now)
        self._trusted.pop(pair, None)
        self._trusted[pair] = now
        _bound(self._trusted, self.max_keys)


def _bound(seen: dict[Any, Any], max_keys: int) -> None:
    """Forget the oldest entries (a dict keeps insertion order) past ``max_keys``."""
    while len(seen) > max_keys:
        del seen[next(iter(seen))]


def _client(address: str | None) -> str:
    """The throttling key of a client address: IPv6 by /64, anything else as it is."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _check(account: Account) -> None:
    if not account.login or account.login != account.login.strip():
        raise AccountsError(f"login {account.login!r}: empty or padded with spaces")
    if account.role not in ROLES:
        raise AccountsError(f"login {account.login!r}: role must be one of {ROLES}")
    if account.role == "agent" and not account.agent_id:
        raise AccountsError(f"login {account.login!r}: an agent account needs an agent_id")
    if account.device and not _DEVICE.fullmatch(account.device):
        raise AccountsError(f"login {account.login!r}: device must be like PJSIP/2001")
    try:
        parse_hash(account.password_hash)
    except HashError as exc:
        raise AccountsError(f"login {account.login!r}: {exc}") from None


def _account(index: int, body: Mapping[str, Any]) -> Account:
    keys = {"login", "name", "agent_id", "role", "password_hash", "device"}
    unknown, missing = set(body) - keys, {"login", "role", "password_hash"} - set(body)
    if unknown or missing:
        raise AccountsError(
            f"[[accounts]] #{index}: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
        )
    values = {k: body.get(k, "") for k in keys}
    if not all(isinstance(v, str) for v in values.values()):
        raise AccountsError(f"[[accounts]] #{index}: every value must be a string")
    return Account(
        login=values["login"],
        name=values["name"] or values["login"],
        agent_id=values["agent_id"],
        role=cast(Role, values["role"]),  # checked by Accounts
        password_hash=values["password_hash"],
        device=values["device"],
    )


def main() -> None:
    """Print the hash of a password typed twice (for an accounts file)."""
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("the two passwords differ")
    print(hash_password(first))


if __name__ == "__main__":
    main()
