"""Who may read one customer: an agent, the customers of their work; a supervisor, anyone,
audited.

Theory of operation
-------------------
Customer ids are sequential, so the id in a URL is no secret: the check is what stops an
agent walking them. An agent may read (and add a note to, or correct the contact data of)
a customer who is

- on one of their cards now (the pop's lookup of a call offered to them),
- in the results of a search or phone lookup they ran within ``GRANT_TTL`` (a grant kept in
  memory, at most ``GRANT_SIZE`` ids per login, the oldest forgotten first), or
- in their own work in the store (crm_sync.customer_access: a call, an outcome or a note of
  theirs, a follow-up of theirs or of one of their queues).

Memory answers first; the store is asked only when memory says no, so the pop's hot path and
the common reads (a card's customer, a search hit) cost no query. Anything else is refused
``403 not_your_customer`` and the refusal is audited, folded and bounded per login
(crm_sync.audit.record_denied: past its limit the answer is 429). A supervisor reads any
customer, and each read is audited (crm_sync.audit.record_read folds a run of reads of one
customer into one row that counts them). Without an audit row there is no supervisor read:
if the store cannot write it, 503.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync import audit
from crm_sync.customer_access import in_agent_work
from crm_sync.followups import owners_for
from screenpop.denials import refuse
from screenpop.errors import store_unavailable
from screenpop.keys import AGENT_QUEUES, CLOCK, POP, SESSION, STORE
from screenpop.pipeline import PopService

log = logging.getLogger(__name__)

GRANT_TTL = timedelta(hours=1)  # how long a search result stays readable without other grounds
GRANT_SIZE = 1000  # ids remembered per login; a search shows at most 20
READ = "customer.read"  # the audit action of a customer's page or card
NOTE = "customer.note"
CONTACT = "customer.contact"


class Access(enum.Enum):
    READ = "read"  # an agent's own customer
    AUDITED = "audited"  # a supervisor's read: allowed, and recorded
    ASK_STORE = "ask_store"  # memory says no: the store may still know it as the agent's work
    REFUSED = "refused"


def decide(role: str, *, remembered: bool, in_work: bool | None = None) -> Access:
    """The rule, without I/O: ``remembered`` is what memory knows (a card, a search grant),
    ``in_work`` what the store said (None: not asked yet)."""
    if role == "supervisor":
        return Access.AUDITED
    if remembered:
        return Access.READ
    if in_work is None:
        return Access.ASK_STORE
    return Access.READ if in_work else Access.REFUSED


class SearchGrants:
    """The customers each login found by searching lately, bounded and expiring. Memory only:
    a restart forgets them, and the agent searches again."""

    def __init__(self, ttl: timedelta = GRANT_TTL, size: int = GRANT_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._granted: dict[str, OrderedDict[int, datetime]] = {}

    def grant(self, login: str, customer_ids: Iterable[int], *, now: datetime) -> None:
        granted = self._granted.setdefault(login, OrderedDict())
        for customer_id in customer_ids:
            granted[customer_id] = now
            granted.move_to_end(customer_id)
        while len(granted) > self.size:
            granted.popitem(last=False)

    def holds(self, login: str, customer_id: int, *, now: datetime) -> bool:
        granted = self._granted.get(login)
        at = granted.get(customer_id) if granted is not None else None
        return at is not None and now - at < self.ttl


GRANTS = web.AppKey("customer_grants", SearchGrants)


def on_cards(pop: PopService, agent: str, customer_id: int) -> bool:
    """Whether the customer is one the pop found for a call on the agent's cards now."""
    for card in pop.book.cards_for(agent):
        lookup = card.lookup or pop.lookup_for(card.pbx, card.call_id)
        if lookup is not None and any(c.id == customer_id for c in lookup.cards):
            return True
    return False


def granted(request: web.Request, customer_ids: Iterable[int]) -> None:
    """Remember what an agent's search or lookup showed them (a supervisor needs no grant)."""
    account = request[SESSION].account
    if account.role != "supervisor":
        request.app[GRANTS].grant(account.login, customer_ids, now=request.app[CLOCK]())


async def check(request: web.Request, customer_id: int, action: str = READ) -> None:
    """Let the request's account read or change the customer, or raise ApiError: 403
    ``not_your_customer`` (audited), 429 after too many refusals, 503 when the store cannot
    answer or audit."""
    account = request[SESSION].account
    app = request.app
    now = app[CLOCK]()
    remembered = account.role != "supervisor" and (
        on_cards(app[POP], account.agent_id, customer_id)
        or app[GRANTS].holds(account.login, customer_id, now=now)
    )
    verdict = decide(account.role, remembered=remembered)
    if verdict is Access.READ:
        return
    store = app[STORE]
    if store is None:
        raise store_unavailable()
    detail = f"customer {customer_id}"
    try:
        if verdict is Access.AUDITED:
            await audit.record_read(
                store.sessions,
                at=now,
                login=account.login,
                role=account.role,
                action=action,
                agent=account.agent_id,
                detail=detail,
            )
            return
        queues = app[AGENT_QUEUES](account.agent_id)
        in_work = await in_agent_work(
            store.sessions,
            customer_id,
            agent=account.agent_id,
            owners=owners_for(account.agent_id, queues),
        )
    except (SQLAlchemyError, OSError) as exc:
        log.warning("access of %s to customer %s not decided: %s", account.login, customer_id, exc)
        raise store_unavailable() from exc
    if decide(account.role, remembered=False, in_work=in_work) is Access.READ:
        return
    await refuse(
        request,
        error_id="not_your_customer",
        message="This customer is not in your calls, follow-ups or recent searches.",
        action=action,
        result="not your customer",
        tried="reads",
        agent=account.agent_id,
        detail=detail,
    )
