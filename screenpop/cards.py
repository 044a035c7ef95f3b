"""Screen-pop cards: one per (call, agent), driven by the call model's domain events. Pure.

Theory of operation
-------------------
A card is the full state of what one agent sees for one call; every change produces a new
version of the whole card (an idempotent upsert for the browser), never a diff. The book keys
cards by ``(pbx, call_id, agent)``: a second tab, a reconnect or a replayed event can only
update the same card. ``AgentRinging`` opens (or re-opens, for a new ring attempt) the card;
``AgentRingStopped`` and an unanswered end close it; ``CallAnswered`` keeps it open; the
end of an answered call (or the agent transferring it away) puts it in ``wrapup``, where the
outcome form lives until the outcome is saved. An outcome saved while the call goes on keeps
the card open (``outcome_saved``) until the call ends, which then closes it without a wrap-up.
A transfer target's card carries the history of the call so far, so the next agent never asks
again. Customer data arrives separately
(:meth:`PopBook.enrich`) because the pop never waits for the store, and what the IVR learned
(:meth:`PopBook.learned`) over its own connection, usually before the first ring.

The IVR's findings are put in words here, once, when they arrive (:func:`ivr_view`): each step
of the path with its label from the menu and what the caller did there, the figure they were
told, each survey answer with its scale. The browser and the JSON API get the same words; the
browser only formats the figures (money, numbers) for its locale.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from crm_sync.phones import PhoneNormalizer
from crm_sync.store import Lookup
from cti.events import (
    AgentRinging,
    AgentRingStopped,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallerIdentified,
    CallMerged,
    CallQueued,
    CallStarted,
    CallTransferred,
    DomainEvent,
)

CardState = Literal["ringing", "answered", "wrapup", "closed"]
MAX_CALLS = 20_000  # calls remembered for wrap-up; the oldest are forgotten first
MAX_EARLY = 1_000  # IVR findings held for calls the book has not seen yet


@dataclass(frozen=True, slots=True)
class Card:
    """What one agent sees for one call (a snapshot: safe to serialise and hand out)."""

    id: str
    pbx: str
    call_id: str
    agent: str
    state: CardState
    version: int
    caller_number: str
    caller_name: str
    queue: str | None
    queued_at: float | None
    ringing_at: float | None
    answered_at: float | None
    closed_reason: str | None
    history: tuple[tuple[float | None, str], ...]  # (when, what happened), oldest first
    lookup: Lookup | None
    ivr: dict[str, Any] | None  # what the IVR learned, in words: ivr_view(Findings.to_json())
    outcome_saved: bool  # saved while the call went on: it closes when the call ends
    away: bool  # in wrap-up from a call that ended while the agent's page was closed
    # the agent's wrap-up hold ended at [wrapup] max_seconds, the outcome still owed
    hold_released: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (datetimes as ISO 8601 strings)."""
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class CardUpdate:
    agent: str
    card: Card


@dataclass(slots=True)
class _Call:
    pbx: str
    call_id: str
    caller_number: str = ""
    caller_name: str = ""
    queue: str | None = None
    queued_at: float | None = None
    lookup: Lookup | None = None
    ivr: dict[str, Any] | None = None
    history: list[tuple[float | None, str]] = field(default_factory=list)
    cards: dict[str, Card] = field(default_factory=dict)
    handled_by: list[str] = field(default_factory=list)
    ended: bool = False


class PopBook:
    """Cards for every agent; feed it domain events and lookup results."""

    def __init__(self) -> None:
        self._calls: OrderedDict[tuple[str, str], _Call] = OrderedDict()
        # each agent's calls with a card not closed, in the order they opened: what a page
        # asks for (snapshot, API) is the agent's few cards, not a walk of every call held
        self._open: dict[str, dict[tuple[str, str], None]] = {}
        # calls settled (ended, every card closed): only the caller's number and who handled
        # them (for an outcome saved again), strings the collector does not walk; a late
        # duplicate event cannot bring such a call back
        self._settled: OrderedDict[tuple[str, str], tuple[str, tuple[str, ...]]] = OrderedDict()
        self._early: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    # ---------------------------------------------------------------- queries

    def cards_for(self, agent: str) -> list[Card]:
        """The agent's cards that are not closed (what a new browser tab shows)."""
        return [self._calls[key].cards[agent] for key in self._open.get(agent, ())]

    def card(self, pbx: str, call_id: str, agent: str) -> Card | None:
        """The agent's card of that call, if the book still has the call (any state). One
        dict read: the outcome path asks this for every save, whatever the book holds."""
        call = self._calls.get((pbx, call_id))
        return call.cards.get(agent) if call is not None else None

    def handled_by(self, pbx: str, call_id: str) -> tuple[str, ...]:
        """Agents who had the customer on this call (who may record its outcome)."""
        call = self._calls.get((pbx, call_id))
        if call is None:
            return self._settled.get((pbx, call_id), ("", ()))[1]
        return tuple(call.handled_by)

    def caller_number(self, pbx: str, call_id: str) -> str | None:
        call = self._calls.get((pbx, call_id))
        if call is None:
            settled = self._settled.get((pbx, call_id))
            return settled[0] if settled else None
        return call.caller_number

    def knows(self, pbx: str, call_id: str) -> bool:
        """False once the call is settled (or was never seen): its cards are gone."""
        return (pbx, call_id) in self._calls

    # ---------------------------------------------------------------- changes

    def apply(self, event: DomainEvent) -> list[CardUpdate]:
        """The card changes one domain event causes (often none)."""
        key = (event.pbx, event.call_id)
        if key in self._settled:
            return []  # a late duplicate of a call that is over
        if isinstance(event, CallStarted):
            self._call(key).history.append(_line(event.at, "call started"))
            return []
        call = self._calls.get(key)
        if call is None:
            call = self._call(key)  # attached mid-call: cards still work
        match event:
            case CallerIdentified() | CallQueued():
                call.caller_number = event.caller_number or call.caller_number
                call.caller_name = event.caller_name or call.caller_name
                if isinstance(event, CallQueued):
                    call.queue, call.queued_at = event.queue, call.queued_at or event.at
                    call.history.append(_line(event.at, f"queued in {event.queue}"))
                return self._touch_all(call)
            case AgentRinging():
                call.caller_number = event.caller_number or call.caller_number
                call.caller_name = event.caller_name or call.caller_name
                return self._ring(call, event)
            case AgentRingStopped():
                call.history.append(
                    _line(event.at, f"{event.agent} did not answer ({event.reason})")
                )
                return self._set(call, event.agent, "closed", reason=event.reason)
            case CallAnswered():
                if event.agent not in call.handled_by:
                    call.handled_by.append(event.agent)
                call.history.append(_line(event.at, f"answered by {event.agent}"))
                return self._set(call, event.agent, "answered", at=event.at, create=True)
            case CallTransferred():
                t = event.transfer
                call.history.append(
                    _line(event.at, f"{t.type} transfer from {t.from_agent or '?'} to {t.to}")
                )
                if t.from_agent is not None:
                    return self._after_talk(call, t.from_agent, "transferred")
                return []
            case CallAbandoned():
                call.history.append(_line(event.at, f"left {event.queue} ({event.reason})"))
                return self._close_ringing(call, event.reason)
            case CallMerged():
                return self._merge(call, (event.pbx, event.absorbed_call_id))
            case CallEnded():
                call.history.append(_line(event.at, f"ended ({event.record.outcome or 'unknown'})"))
                updates = self._close_ringing(call, "ended")
                for agent, card in list(call.cards.items()):
                    if card.state == "answered":
                        updates += self._after_talk(call, agent, "ended")
                call.ended = True
                self._settle(call)
                return updates
        return []

    def enrich(self, pbx: str, call_id: str, lookup: Lookup) -> list[CardUpdate]:
        """Customer data for a call arrived: every open card of it shows it."""
        call = self._calls.get((pbx, call_id))
        if call is None:
            return []
        call.lookup = lookup
        return self._touch_all(call)

    def learned(self, pbx: str, call_id: str, findings: dict[str, Any]) -> list[CardUpdate]:
        """The IVR reports what it learned about a call (often before any agent rings):
        every open card of it shows it, and so will the cards still to come. A later menu of
        the same call (the survey after the agent hung up) adds its scores to the first's."""
        key = (pbx, call_id)
        view = ivr_view(findings)
        call = self._calls.get(key)
        if call is None:
            if key not in self._settled:  # the IVR was quicker than AMI: hold it a moment
                _bounded(self._early, key, view, MAX_EARLY)
            return []
        first = call.ivr
        if first is not None and first.get("menu") != view.get("menu"):
            scores = {**first.get("scores", {}), **view["scores"]}
            asked = {answer["question"] for answer in view["survey"]}
            kept = [answer for answer in first.get("survey", []) if answer["question"] not in asked]
            view = {**first, "scores": scores, "survey": [*kept, *view["survey"]]}
        call.ivr = view
        return self._touch_all(call)

    def outcome_saved(self, pbx: str, call_id: str, agent: str) -> list[CardUpdate]:
        """The agent's outcome is committed: the wrap-up card closes. Saved while the call
        goes on, the card stays (the agent is still talking) and closes when the call ends,
        without a wrap-up."""
        call = self._calls.get((pbx, call_id))
        if call is None or agent not in call.cards:
            return []
        if call.cards[agent].state == "answered":
            return self._put(call, agent, "answered", outcome_saved=True)
        updates = self._set(call, agent, "closed", reason="outcome saved")
        self._settle(call)
        return updates

    def restore(
        self, pbx: str, call_id: str, agent: str, *, ended_at: float, lookup: Lookup | None
    ) -> list[CardUpdate]:
        """The wrap-up card of a call that ended before this process started, its outcome
        still owed (the store's call row says so): the agent finishes it as before."""
        key = (pbx, call_id)
        if key in self._calls or key in self._settled:
            return []
        call = self._call(key)
        call.caller_number = lookup.raw if lookup is not None else ""
        call.lookup = lookup
        call.handled_by.append(agent)
        call.history.append(_line(ended_at, f"ended; taken by {agent}, outcome still owed"))
        call.ended = True
        return self._put(call, agent, "wrapup", closed_reason="ended")

    def mark_away(self, pbx: str, call_id: str, agent: str) -> list[CardUpdate]:
        """The call ended while the agent's page was closed: nobody held them for it, so its
        wrap-up card is one they may finish or dismiss, not one that stops their work."""
        call = self._calls.get((pbx, call_id))
        card = call.cards.get(agent) if call is not None else None
        if call is None or card is None or card.state != "wrapup" or card.away:
            return []
        return self._put(call, agent, "wrapup", away=True)

    def release_hold(self, pbx: str, call_id: str, agent: str) -> list[CardUpdate]:
        """The agent is no longer held for this wrap-up card (the longest wrap-up passed):
        it keeps its outcome form and says so."""
        call = self._calls.get((pbx, call_id))
        card = call.cards.get(agent) if call is not None else None
        if call is None or card is None or card.state != "wrapup" or card.hold_released:
            return []
        return self._put(call, agent, "wrapup", hold_released=True)

    def dismiss(self, pbx: str, call_id: str, agent: str) -> list[CardUpdate] | None:
        """Close a wrap-up card of a call that ended while the agent was away, without an
        outcome; None if there is no such card (only those may be dismissed)."""
        call = self._calls.get((pbx, call_id))
        card = call.cards.get(agent) if call is not None else None
        if call is None or card is None or card.state != "wrapup" or not card.away:
            return None
        updates = self._set(call, agent, "closed", reason="dismissed")
        self._settle(call)
        return updates

    # ---------------------------------------------------------------- internals

    def _call(self, key: tuple[str, str]) -> _Call:
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call(*key, ivr=self._early.pop(key, None))
            while len(self._calls) > MAX_CALLS:
                self._drop(self._calls.popitem(last=False)[1])
        return call

    def _drop(self, call: _Call) -> None:
        """A call forgotten: its cards leave the agents' open lists with it."""
        key = (call.pbx, call.call_id)
        for agent in call.cards:
            self._closed(agent, key)

    def _closed(self, agent: str, key: tuple[str, str]) -> None:
        opened = self._open.get(agent)
        if opened is not None:
            opened.pop(key, None)
            if not opened:
                del self._open[agent]

    def _settle(self, call: _Call) -> None:
        """An ended call with every card closed can change no more: forget all but its key.
        (Kept, 20,000 calls with their cards and customer data would be millions of objects
        that every full garbage collection walks, stalling every pop meanwhile.)"""
        if call.ended and all(card.state == "closed" for card in call.cards.values()):
            key = (call.pbx, call.call_id)
            if self._calls.pop(key, None) is not None:
                self._drop(call)
            settled = (call.caller_number, tuple(call.handled_by))
            _bounded(self._settled, key, settled, MAX_CALLS)

    def _ring(self, call: _Call, event: AgentRinging) -> list[CardUpdate]:
        card = call.cards.get(event.agent)
        if card is not None and card.ringing_at == event.at:
            return []  # the same ring seen again: never a second pop
        if card is not None and card.state in ("answered", "wrapup"):
            return []
        where = f" from {event.queue}" if event.queue else ""
        call.history.append(_line(event.at, f"ringing {event.agent}{where}"))
        return self._put(call, event.agent, "ringing", ringing_at=event.at, closed_reason=None)

    def _after_talk(self, call: _Call, agent: str, why: str) -> list[CardUpdate]:
        """The agent's part of the call is over: wrap-up, unless the outcome is saved."""
        card = call.cards.get(agent)
        if card is not None and card.outcome_saved:
            return self._set(call, agent, "closed", reason="outcome saved")
        return self._set(call, agent, "wrapup", reason=why)

    def _set(
        self,
        call: _Call,
        agent: str,
        state: CardState,
        *,
        reason: str | None = None,
        at: float | None = None,
        create: bool = False,
    ) -> list[CardUpdate]:
        card = call.cards.get(agent)
        if card is None and not create:
            return []
        if card is not None and card.state == state and card.closed_reason == reason:
            return []
        if card is not None and card.state == "closed" and state != "answered":
            return []
        changes: dict[str, Any] = {"closed_reason": reason}
        if state == "answered":
            changes["answered_at"] = at
        return self._put(call, agent, state, **changes)

    def _put(self, call: _Call, agent: str, state: CardState, **changes: Any) -> list[CardUpdate]:
        old = call.cards.get(agent)
        base = old or Card(
            id=f"{call.pbx}/{call.call_id}/{agent}",
            pbx=call.pbx,
            call_id=call.call_id,
            agent=agent,
            state=state,
            version=0,
            caller_number="",
            caller_name="",
            queue=None,
            queued_at=None,
            ringing_at=None,
            answered_at=None,
            closed_reason=None,
            history=(),
            lookup=None,
            ivr=None,
            outcome_saved=False,
            away=False,
        )
        card = replace(
            base,
            state=state,
            version=base.version + 1,
            caller_number=call.caller_number,
            caller_name=call.caller_name,
            queue=call.queue,
            queued_at=call.queued_at,
            history=tuple(call.history),
            lookup=call.lookup,
            ivr=call.ivr,
            **changes,
        )
        call.cards[agent] = card
        key = (call.pbx, call.call_id)
        if state == "closed":
            self._closed(agent, key)
        else:
            self._open.setdefault(agent, {})[key] = None
        return [CardUpdate(agent, card)]

    def _touch_all(self, call: _Call) -> list[CardUpdate]:
        updates: list[CardUpdate] = []
        for agent, card in list(call.cards.items()):
            if card.state != "closed":
                updates += self._put(call, agent, card.state)
        return updates

    def _close_ringing(self, call: _Call, reason: str) -> list[CardUpdate]:
        updates: list[CardUpdate] = []
        for agent, card in list(call.cards.items()):
            if card.state == "ringing":
                updates += self._set(call, agent, "closed", reason=reason)
        return updates

    def _merge(self, call: _Call, absorbed_key: tuple[str, str]) -> list[CardUpdate]:
        absorbed = self._calls.pop(absorbed_key, None)
        if absorbed is None:
            return []
        self._drop(absorbed)
        updates: list[CardUpdate] = []
        for agent, card in absorbed.cards.items():
            if card.state != "closed":
                closed = replace(
                    card, state="closed", version=card.version + 1, closed_reason="merged"
                )
                updates.append(CardUpdate(agent, closed))
        for agent in absorbed.handled_by:
            if agent not in call.handled_by:
                call.handled_by.append(agent)
        return updates


# What the caller did at a step, by the walker's outcome (ivr.walk); a digit is a key pressed.
_OUTCOMES: dict[str, str] = {
    "played": "heard it",
    "skipped": "skipped it",
    "caller_id": "identified by caller ID",
    "account": "identified by customer number",
    "caller-id-unknown": "caller ID not on record",
    "caller-id-several": "caller ID shared by several customers",
    "skip": "went on without a customer number",
    "account-unknown": "typed a customer number not on record",
    "timeout": "pressed nothing in time",
    "invalid": "typed something not valid here",
    "pin-timeout": "typed no PIN in time",
    "pin-invalid": "typed a PIN that is not valid",
    "pin-wrong": "typed a wrong PIN",
    "pin-locked": "PIN not asked: too many wrong PINs for this customer lately",
    "store-timeout": "the store was too slow to answer",
    "store-error": "the store failed",
    "said": "was told",
    "unidentified": "not told: the caller is not identified",
    "routed": "put through to an agent",
    "created": "asked to be called back",
    "no-number": "asked to be called back, but the number is withheld",
    "hangup": "heard goodbye; the IVR hung up",
    "hung-up": "hung up here",
    "too-many-steps": "went round too long; put through",
}
_FIGURES: dict[str, str] = {
    "balance": "the balance",
    "last_order": "the last order's status",
    "open_tickets": "the number of open tickets",
}


def ivr_view(findings: dict[str, Any]) -> dict[str, Any]:
    """The IVR's findings in words for the card (``Findings.to_json()``, whose ``terms`` are
    the menu's ``Menu.terms()`` and ``told`` the figures said, by step): ``steps``, the path
    as ``{step, label, outcome, text, told}``; ``survey``, the scores as ``{question, label,
    score, min, max, text}``; ``ended_at_label``, the label of ``ended_at_step``. ``path``
    and ``scores`` stay as they came; ``terms`` and ``told`` are used up. Without terms a
    step's label is its id made readable and a score has no scale: never a guess."""
    terms = findings.get("terms") or {}
    told: dict[str, dict[str, Any]] = findings.get("told") or {}
    view = {k: v for k, v in findings.items() if k not in ("terms", "told")}
    view["scores"] = findings.get("scores") or {}
    view["steps"] = [
        _step_words(step_id, outcome, terms, told.get(step_id) if outcome == "said" else None)
        for step_id, outcome in findings.get("path", [])
    ]
    if isinstance(findings.get("ended_at_step"), str):
        view["ended_at_label"] = _label(findings["ended_at_step"], terms.get("steps", {}))
    scales: dict[str, dict[str, Any]] = terms.get("scores", {})
    view["survey"] = [
        _answer_words(question, score, scales.get(question))
        for question, score in view["scores"].items()
    ]
    return view


def _step_words(
    step_id: str, outcome: str, terms: dict[str, Any], told: dict[str, Any] | None
) -> dict[str, Any]:
    steps: dict[str, dict[str, Any]] = terms.get("steps", {})
    about = steps.get(step_id, {})
    text = _OUTCOMES.get(outcome)
    if outcome == "said" and told is None:
        text = f"was told {_FIGURES.get(about.get('figure', ''), 'a figure')}"
    elif outcome == "account" and about.get("pin"):
        text = "identified by customer number and PIN"
    elif text is None and about.get("type") == "rate":  # a score, or its label ("yes")
        scale = terms.get("scores", {}).get(about.get("score"))
        named = outcome.isdigit() and scale is not None
        text = f"answered {_scaled(int(outcome), scale) if named else outcome}"
    elif text is None and len(outcome) == 1:  # a key of a menu step
        target = about.get("options", {}).get(outcome)
        text = f"pressed {outcome}" + (f": {_label(target, steps)}" if target else "")
    return {
        "step": step_id,
        "label": _label(step_id, steps),
        "outcome": outcome,
        "text": text or outcome,
        "told": told,
    }


def _label(step_id: str, steps: dict[str, dict[str, Any]]) -> str:
    label = steps.get(step_id, {}).get("label")
    return label if isinstance(label, str) else step_id.replace("_", " ").capitalize()


def _answer_words(question: str, score: int, scale: dict[str, Any] | None) -> dict[str, Any]:
    label = question.replace("_", " ").capitalize() if scale is None else scale["label"]
    return {
        "question": question,
        "label": label,
        "score": score,
        "min": None if scale is None else scale["min"],
        "max": None if scale is None else scale["max"],
        "text": str(score) if scale is None else _scaled(score, scale),
    }


def _scaled(score: int, scale: dict[str, Any]) -> str:
    """A score read against its scale: its label ("yes"), else "4 of 5" ("4 of 0 to 9")."""
    named = scale.get("labels", {}).get(str(score))
    if named:
        return str(named)
    low, high = scale["min"], scale["max"]
    return f"{score} of {high}" if low == 1 else f"{score} of {low} to {high}"


def card_view(card: Card, phones: PhoneNormalizer | None) -> dict[str, Any]:
    """A card as the browser gets it: the card's JSON plus the caller number to show."""
    e164 = card.lookup.e164 if card.lookup else None
    if e164 is None and phones is not None:
        e164 = phones.to_e164(card.caller_number)
    display = phones.display(e164) if phones and e164 else card.caller_number
    return {**card.to_json(), "display_number": display}


def _bounded(
    memory: OrderedDict[tuple[str, str], Any], key: tuple[str, str], value: Any, size: int
) -> None:
    memory[key] = value
    while len(memory) > size:
        memory.popitem(last=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _line(at: float | None, text: str) -> tuple[float | None, str]:
    return (at, text)
