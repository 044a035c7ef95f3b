"""Who may use the IVR, and how much: the FastAGI port's allow-list and shared secret, the
PIN-guess limit across calls, and the check that a session's call is one the AMI side follows.

Theory of operation
-------------------
The FastAGI port must be reachable from Asterisk, and res_agi offers no authentication: any
peer that connects can claim any ``agi_callerid``, guess PINs and name any call in reply to
``GET VARIABLE CHANNEL(linkedid)``. So, in this order:

* the peer's address must be on an allow-list (:class:`PeerAllowList`), checked before a
  byte is read;
* with a secret configured, the AGI URL must carry it (``agi://host/main?secret=...``,
  relayed by res_agi in ``agi_network_script``), compared in constant time;
* PIN checks are counted per customer across sessions (:class:`PinLimiter`): past the limit
  the PIN is refused without asking the store, for a lockout that doubles each time;
* findings reach a call's card only when the call tracker knows that call *and* the session's
  channel is one of its channels (:class:`TrackedCalls`), so a peer that names a live call's
  id cannot rewrite it.

Everything here is pure (the clock is injected); the edges are ``ivr.server`` and
``ivr.runner``.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cti.calls import CallTracker

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1")
SECRET_PARAM = "secret"  # agi://host:4573/main?secret=... (docs/ivr.md)


def parse_network(entry: str) -> IpNetwork:
    """An IP address or CIDR network (``10.0.0.5``, ``10.0.0.0/24``, ``::1``).

    Raises ValueError, saying what is wrong, for anything else (a host name, host bits set)."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not an IP address or CIDR network ({exc})") from None


def is_network(entry: str) -> bool:
    try:
        parse_network(entry)
    except ValueError:
        return False
    return True


class PeerAllowList:
    """The addresses allowed to connect to the FastAGI port."""

    def __init__(self, entries: Iterable[str]) -> None:
        """Raises ValueError for an entry that is not an address or network."""
        self.networks: tuple[IpNetwork, ...] = tuple(parse_network(e) for e in entries)

    def allows(self, host: str) -> bool:
        """Whether a peer address (as ``peername`` gives it) is on the list; an IPv4 peer
        seen through an IPv6 socket (``::ffff:10.0.0.5``) counts as its IPv4 address."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def secret_matches(given: str, secret: str) -> bool:
    """Constant-time comparison, so the answer time does not leak how much of it matched."""
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


@dataclass(slots=True)
class _PinState:
    failures: deque[float] = field(default_factory=deque)  # times of counted attempts
    locked_until: float = float("-inf")
    lockouts: int = 0  # in a row: each doubles the next lockout
    touched: float = 0.0


class PinLimiter:
    """At most ``failures`` PIN attempts per customer per ``window`` seconds, whatever the
    session; then PIN entry is refused for ``lockout`` seconds, doubled at each lockout in a
    row (up to ``max_lockout``). A right PIN clears the count.

    An attempt is counted when it *starts* (:meth:`attempt`) and given back when it proves
    right (:meth:`succeeded`), so parallel sessions cannot slip in more checks than the limit
    while the store answers. At most ``max_customers`` customers are remembered (the oldest
    untouched are forgotten first; they are in no lockout once ``window`` and their lockout
    have passed)."""

    def __init__(
        self,
        *,
        failures: int = 5,
        window: float = 900.0,
        lockout: float = 60.0,
        max_lockout: float = 3600.0,
        max_customers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window <= 0 or lockout <= 0 or max_customers < 1:
            raise ValueError("failures and max_customers must be ≥ 1, window and lockout > 0")
        self.failures = failures
        self.window = window
        self.lockout = lockout
        self.max_lockout = max(max_lockout, lockout)
        self.max_customers = max_customers
        self.clock = clock
        self._states: OrderedDict[int, _PinState] = OrderedDict()

    def attempt(self, customer_id: int) -> bool:
        """May this customer's PIN be checked now? If so the attempt is counted."""
        now = self.clock()
        state = self._state(customer_id, now)
        if now < state.locked_until:
            return False
        while state.failures and state.failures[0] <= now - self.window:
            state.failures.popleft()
        if len(state.failures) >= self.failures:
            seconds = min(self.lockout * 2**state.lockouts, self.max_lockout)
            state.locked_until = now + seconds
            state.lockouts += 1
            state.failures.clear()
            return False
        state.failures.append(now)
        return True

    def succeeded(self, customer_id: int) -> None:
        """The PIN was right: the customer starts afresh."""
        self._states.pop(customer_id, None)

    def locked(self, customer_id: int) -> bool:
        state = self._states.get(customer_id)
        return state is not None and self.clock() < state.locked_until

    def __len__(self) -> int:
        return len(self._states)

    def _state(self, customer_id: int, now: float) -> _PinState:
        state = self._states.get(customer_id)
        if state is None:
            if len(self._states) >= self.max_customers:
                self._forget(now)
            state = self._states[customer_id] = _PinState()
        self._states.move_to_end(customer_id)
        state.touched = now
        return state

    def _forget(self, now: float) -> None:
        """Drop customers with nothing left to remember, else the least recently seen."""
        stale = [
            key
            for key, s in self._states.items()
            if s.locked_until <= now and s.touched <= now - self.window - self.max_lockout
        ]
        for key in stale:
            del self._states[key]
        while len(self._states) >= self.max_customers:
            self._states.popitem(last=False)


class TrackedCalls:
    """The live-call query the IVR needs, over the AMI side's call trackers (one per PBX)."""

    def __init__(self, trackers: Mapping[str, CallTracker]) -> None:
        self.trackers = trackers

    def has_channel(self, pbx: str, call_id: str, channel: str, uniqueid: str) -> bool:
        """Whether ``call_id`` (a linkedid) is a live call of ``pbx`` and the AGI channel is
        one of its channels: uniqueid *and* name must match, since the first channel's
        uniqueid is the linkedid itself and naming it alone would prove nothing."""
        tracker = self.trackers.get(pbx)
        return tracker is not None and tracker.has_channel(call_id, uniqueid, channel)
