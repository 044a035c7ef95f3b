"""Demo data: a few thousand realistic customers with their history, the same for a seed.

Who is seeded: consumers (B2C) and company accounts (B2B) with one to three contact persons;
Chinese and Latin names (accents, apostrophes, quotes, one deliberately hostile company
name), numbers in the PBX simulator's spellings, owners among the demo agents, languages,
tags, and a timeline per customer: web orders with amounts, tickets (some open), e-mails,
notes, past calls with their outcomes (some within the last 24 hours, for the repeat-caller
flag) and open follow-ups. For the IVR, most customers have an account balance (in CNY for
Chinese speakers, EUR or USD otherwise) and every person has the PIN ``1234``; about half of
the calls older than a day have a survey answer. The orders are drawn for a planned value
tier (about 5 % VIP) and lifecycle stage (prospects, new, active, won back, lapsed, lost),
and the seeding ends with every demo customer's segments computed by the rules
(crm_sync.segments), so the tiers, stages, quadrants and reasons shown are the rules' own.

Why the demo pops known customers: the simulator draws caller numbers from its own seeded
random stream (``pbxsim.traffic.random_caller``), interleaved with everything else the
call planner draws. Rather than guess, :func:`simulated_callers` runs the simulator's real
traffic loop (``run_traffic`` at speed 0, on a server that is never started) and records the
caller of each planned call. The numbers of the first ``simulator_calls`` calls are then
given to seeded customers, each with probability 0.8; the rest stay unknown, so the demo also
shows "new customer" pops, and a few numbers are shared by two customers (a household), so
it shows the choice between several. With ``cti demo``'s defaults (seed 1, 4 calls a
minute, any ``--speed``) and the default 2,000 calls (about 8 h 20 min of demo), 76 % of
calls pop a seeded customer (measured: 1,527 of 2,000; 0.8 of the 95 % that are not
anonymous). The call plan depends on the seed and the rate (the rate moves the virtual
clock, hence which agents are free, hence what is drawn next); at another rate or seed only
chance matches remain (measured 2 to 5 %: seed 1 at 3, 6 or 12 a minute, seed 2 at 4).
Live, the plan changes only where the demo's users change the PBX (a pause, a callback:
pbxsim.traffic re-plans such calls on a random stream of their own, so the calls after
them keep their callers). :class:`SeedReport` gives the measured share.

Seeding replaces earlier demo data (external ids ``demo-…``) and nothing else.
"""

from __future__ import annotations

import asyncio
import random
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_sync.customers import (
    CustomerError,
    CustomerIn,
    InteractionIn,
    interaction_values,
    save_customers,
    validate,
    validate_interaction,
)
from crm_sync.models import Base, CallScore, Customer, Interaction
from crm_sync.phones import PhoneNormalizer
from crm_sync.segmenting import recompute_stale
from crm_sync.segments import DEFAULT_RULES, Rules
from ivr.store import hash_pin
from pbxsim.scenarios import UNKNOWN
from pbxsim.server import AmiServer
from pbxsim.traffic import run_traffic

PREFIX = "demo-"
KNOWN_CALLER_SHARE = 0.8
HOUSEHOLD_SHARE = 0.03
AGENTS = ("alice", "bob", "carol", "dave", "eve")
LANGUAGES = ("zh", "en", "es", "de", "fr")
LANGUAGE_WEIGHTS = (45, 20, 12, 12, 11)
# Which customers a simulated number suits best, by country calling code.
LANGUAGES_BY_CODE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"+86": ("zh",), "+49": ("de",), "+44": ("en", "fr"), "+1": ("en", "es")}
)
CURRENCIES: Mapping[str, str] = MappingProxyType(
    {"zh": "CNY", "en": "USD", "es": "EUR", "de": "EUR", "fr": "EUR"}
)
BALANCE_SHARE = 0.85
DEMO_PIN = "1234"
DEMO_PBX = "demo"  # cti_app.demo's PBX: the seeded calls' survey answers are its calls'
SURVEY_SHARE = 0.5  # of the calls older than a day, those with an answer to the survey

SURNAMES_ZH = tuple("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗")  # one character each
GIVEN_ZH = (
    "伟",
    "娜",
    "芳",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀英",
    "建华",
    "晓明",
    "子涵",
    "浩然",
    "欣怡",
)
FIRST: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("Zoë", "Liam", "Olivia", "Siobhán", "Seán", "Emily", "James", "Chloë", "Dwayne"),
        "es": ("José", "María", "Núria", "Íñigo", "Lucía", "Ángel", "Begoña", "Raúl"),
        "de": ("Jürgen", "Jörg", "Käthe", "Günther", "Lena", "Matthias", "Sören", "Anneliese"),
        "fr": ("Émilie", "François", "Hélène", "Gaël", "Anaïs", "Jérôme", "Noël", "Céline"),
    }
)
LAST: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("Ashworth", "O'Brien", "Smith", "Taylor", "McAllister", "D'Arcy", 'Jones "Rock"'),
        "es": ("Núñez", "García", "Fernández", "López", "Muñoz", "Peña", "Ibáñez"),
        "de": ("Groß", "Müller", "Schäfer", "Weiß", "Köhler", "Becker", "Straße-Öztürk"),
        "fr": ("Dubois", "Lefèvre", "Girard", "Bérénger", "Rousseau", "Lemaître", "L'Écuyer"),
    }
)
COMPANIES: Mapping[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        "zh": (
            ("上海", "北京", "深圳", "广州", "杭州", "成都"),
            ("华信", "长城", "新世纪", "东方", "恒通", "金桥", "瑞丰"),
            ("贸易有限公司", "科技有限公司", "物流有限公司", "电子有限公司"),
        ),
        "en": (
            (
                "Northwind",
                "Ashworth & Sons",
                "Blue Harbour",
                "O'Malley's",
                "Tables <b>&</b> Chairs",
            ),
            ("Traders", "Logistics", "Supplies", "Digital"),
            ("Ltd", "plc", "LLP"),
        ),
        "es": (
            ("Distribuciones Núñez", "Peña Hermanos", "Ibérica", "Logística Ñandú"),
            ("Comercial", "Servicios", "Tecnología"),
            ("S.L.", "S.A."),
        ),
        "de": (
            ("Müller", "Groß", "Köhler & Söhne", "Weiß"),
            ("Logistik", "Maschinenbau", "Handel", "Elektronik"),
            ("GmbH", "AG", "KG"),
        ),
        "fr": (
            ("Lefèvre et Fils", "Dubois", "Maison Girard", "L'Atelier"),
            ("Distribution", "Services", "Industrie"),
            ("SARL", "SAS", "SA"),
        ),
    }
)
STREETS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "zh": (
            "上海市浦东新区世纪大道{n}号",
            "北京市朝阳区建国路{n}号",
            "广州市天河区体育西路{n}号",
        ),
        "en": ("{n} Baker Street, London", "{n} Fleet Street, London", "{n} Main St, Springfield"),
        "es": ("Calle de Alcalá {n}, Madrid", "Carrer de Mallorca {n}, Barcelona"),
        "de": ("Friedrichstraße {n}, 10117 Berlin", "Königsallee {n}, 40212 Düsseldorf"),
        "fr": ("{n} rue de Rivoli, 75001 Paris", "{n} quai Saint-Étienne, Lyon"),
    }
)
PLANNED_STAGES = ("prospect", "new", "active", "won_back", "lapsed", "lost")
TAGS = ("newsletter", "wechat", "prefers-email", "prefers-phone", "events", "discount", "老客户")
TICKETS = (
    "Parcel not delivered",
    "Refund request",
    "Wrong size received",
    "Invoice missing",
    "退款申请",
    "发票问题",
    "Rechnung fehlt",
    "Colis endommagé",
    "Pedido incompleto",
)
EMAILS = ("Question about my order", "Re: delivery date", "Change of address", "Re: 报价单")
NOTES = (
    "Prefers to be called after 18:00",
    "Speaks slowly; be patient",
    "Key account: quarterly review with the owner",
    "Asked not to be called on weekends",
    "希望用微信联系",
)
# codes of config/dispositions.toml: the page shows their labels
DISPOSITIONS = ("resolved", "info_given", "callback", "complaint", "order_placed")
FOLLOWUPS = ("Call back about the refund", "Send the quote", "Check the delivery", "回访客户")


Counts = tuple[tuple[str, int], ...]  # (name, count), by name


@dataclass(frozen=True)
class SeedReport:
    """What :func:`seed_demo` wrote, and how many simulated calls will find a customer."""

    customers: int
    persons: int  # consumers (B2C)
    companies: int
    contacts: int  # persons belonging to a company
    phones: int
    balances: int  # customers with an account balance
    pins: int  # persons with the demo PIN
    interactions: tuple[tuple[str, int], ...]  # (kind, count), by kind
    survey_answers: int
    tiers: Counts  # demo customers by tier, as the segment rules computed it
    lifecycles: Counts
    replaced: int  # earlier demo customers removed first
    simulated_calls: int
    matched_calls: int  # of ``simulated_calls``, those whose number belongs to a customer
    seconds: float

    def describe(self) -> str:
        """A few lines for a person to read."""
        share = self.matched_calls / self.simulated_calls if self.simulated_calls else 0.0
        kinds = ", ".join(f"{n} {kind}s" for kind, n in self.interactions)
        return "\n".join(
            [
                f"customers: {self.customers} ({self.persons} consumers, {self.companies} "
                f"companies with {self.contacts} contacts), {self.phones} phone numbers",
                f"timeline: {sum(n for _, n in self.interactions)} entries ({kinds})",
                f"IVR: {self.balances} account balances; {self.pins} persons with PIN {DEMO_PIN}; "
                f"{self.survey_answers} survey answers",
                "segments: "
                + ", ".join(f"{n} {tier}" for tier, n in self.tiers)
                + "; "
                + ", ".join(f"{n} {stage}" for stage, n in self.lifecycles),
                f"simulator: {self.matched_calls} of its first {self.simulated_calls} calls "
                f"({share:.0%}) come from a seeded customer",
                f"replaced {self.replaced} earlier demo customers; took {self.seconds:.2f} s",
            ]
        )


@dataclass
class _Planned:
    """One customer being planned (local to a seeding run)."""

    index: int
    kind: str
    language: str
    company: int | None  # index of the company, for a contact
    numbers: list[str] = field(default_factory=list)


class _CallRecorder(AmiServer):
    """A simulator that is never started: ``run_traffic`` hands it every planned call, and it
    keeps the caller's number instead of playing the events."""

    def __init__(self, calls: int, done: asyncio.Event) -> None:
        super().__init__()
        self.calls = calls
        self.done = done
        self.numbers: list[str | None] = []

    async def play(
        self, offset_events: Iterable[tuple[float, Mapping[str, str]]], speed: float = 1.0
    ) -> None:
        if len(self.numbers) < self.calls:
            numbers = (e.get("CallerIDNum", UNKNOWN) for _, e in offset_events)
            self.numbers.append(next((n for n in numbers if n != UNKNOWN), None))
        if len(self.numbers) >= self.calls:
            self.done.set()


async def simulated_callers(
    seed: int, calls: int, *, rate_per_minute: float = 4.0
) -> list[str | None]:
    """The caller numbers (None: anonymous) of the first ``calls`` calls that the simulator's
    ``run_traffic(seed=seed, rate_per_minute=...)`` will place, as it spells them."""
    if calls <= 0:
        return []
    stop = asyncio.Event()
    recorder = _CallRecorder(calls, stop)
    await run_traffic(recorder, rate_per_minute=rate_per_minute, seed=seed, stop=stop, speed=0)
    return recorder.numbers


async def seed_demo(
    engine: AsyncEngine,
    *,
    customers: int = 3000,
    seed: int = 1,
    now: datetime,
    phones: PhoneNormalizer,
    simulator_rate: float = 4.0,
    simulator_calls: int = 2000,
    rules: Rules = DEFAULT_RULES,
) -> SeedReport:
    """Replace the demo customers with ``customers`` new ones, deterministic for ``seed`` and
    ``now``, and compute their segments by ``rules``. ``seed``/``simulator_rate`` should be
    those of the simulator the demo runs, so its calls find these customers. Raises
    ValueError for a negative count."""
    if customers < 0 or simulator_calls < 0:
        raise ValueError("customers and simulator_calls must not be negative")
    if now.tzinfo is None:
        raise ValueError("now needs a time zone")
    now = now.astimezone(UTC)
    started = time.perf_counter()
    rng = random.Random(seed)
    calls = await simulated_callers(seed, simulator_calls, rate_per_minute=simulator_rate)
    plan = _plan(rng, customers)
    taken = _give_numbers(rng, plan, calls, phones)
    records = [_customer(rng, p, phones, taken) for p in plan]
    timelines = [_timeline(rng, p, r, now, seed) for p, r in zip(plan, records, strict=True)]
    balances = [_balance(rng, p) for p in plan]  # drawn after: the data above stays as it was
    answers = [_answers(rng, t, now) for t in timelines]  # and these after the balances
    # One hash (one salt) for every demo person: scrypt per row would take seconds, and the
    # demo PIN is public anyway.
    pin_hash = await asyncio.to_thread(hash_pin, DEMO_PIN)
    async with AsyncSession(engine) as session, session.begin():
        replaced = await _remove_demo(session)
        ids = await _save(session, records, now)
        rows = [interaction_values(ids[i], entry) for i, t in enumerate(timelines) for entry in t]
        if rows:  # one executemany: the timeline is most of the data
            await session.execute(insert(Base.metadata.tables[Interaction.__tablename__]), rows)
        if ids:  # the IVR's columns, which save_customers does not know: one executemany
            table = Base.metadata.tables[Customer.__tablename__]
            by_id = update(table).where(table.c.id == bindparam("_id"))
            accounts = [
                {
                    "_id": id_,
                    "balance": balance,
                    "currency": currency,
                    "pin_hash": pin_hash if p.kind == "person" else None,
                }
                for p, id_, (balance, currency) in zip(plan, ids, balances, strict=True)
            ]
            await session.execute(by_id, accounts)
        scores = [
            {**answer, "customer_id": ids[i]} for i, found in enumerate(answers) for answer in found
        ]
        if scores:
            await session.execute(insert(Base.metadata.tables[CallScore.__tablename__]), scores)
    # the new customers are stale: compute them (and whatever else was waiting)
    await recompute_stale(async_sessionmaker(engine), rules, now=now)
    tiers, lifecycles = await _segments(engine)
    seeded = {n for r in records for n in r.phones}
    matched = sum(1 for n in calls if n is not None and phones.to_e164(n) in seeded)
    kinds: dict[str, int] = {}
    for entry in (i for t in timelines for i in t):
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    return SeedReport(
        customers=len(plan),
        persons=sum(1 for p in plan if p.kind == "person" and p.company is None),
        companies=sum(1 for p in plan if p.kind == "company"),
        contacts=sum(1 for p in plan if p.company is not None),
        phones=sum(len(r.phones) for r in records),
        balances=sum(1 for balance, _ in balances if balance is not None),
        pins=sum(1 for p in plan if p.kind == "person"),
        interactions=tuple(sorted(kinds.items())),
        survey_answers=len(scores),
        tiers=tiers,
        lifecycles=lifecycles,
        replaced=replaced,
        simulated_calls=len(calls),
        matched_calls=matched,
        seconds=round(time.perf_counter() - started, 3),
    )


# -- planning (pure, driven by the seeded random stream) ------------------------------------


def _plan(rng: random.Random, count: int) -> list[_Planned]:
    """Consumers, and companies each followed by their 1-3 contacts (same language)."""
    plan: list[_Planned] = []
    while len(plan) < count:
        language = rng.choices(LANGUAGES, LANGUAGE_WEIGHTS)[0]
        if rng.random() < 0.1:
            company = len(plan)
            plan.append(_Planned(company, "company", language, None))
            for _ in range(min(rng.randint(1, 3), count - len(plan))):
                plan.append(_Planned(len(plan), "person", language, company))
        else:
            plan.append(_Planned(len(plan), "person", language, None))
    return plan


def _balance(rng: random.Random, p: _Planned) -> tuple[Decimal | None, str | None]:
    """Most customers' account balance (a few in debt) and its currency, by language."""
    if rng.random() >= BALANCE_SHARE:
        return None, None
    low, high = (-500_000, 5_000_000) if p.kind == "company" else (-20_000, 200_000)
    return Decimal(rng.randint(low, high)).scaleb(-2), CURRENCIES[p.language]


def _give_numbers(
    rng: random.Random, plan: list[_Planned], calls: Sequence[str | None], phones: PhoneNormalizer
) -> set[str]:
    """Give simulated callers' numbers to customers whose language suits the country;
    returns every number the callers use (E.164), given or not, so that no other customer
    gets one by chance."""
    pools: dict[str, list[_Planned]] = {language: [] for language in LANGUAGES}
    for planned in plan:
        pools[planned.language].append(planned)
    for pool in pools.values():
        rng.shuffle(pool)
    seen: set[str] = set()
    for raw in calls:
        e164 = None if raw is None else phones.to_e164(raw)
        if raw is None or e164 is None or e164 in seen:
            continue
        seen.add(e164)
        if rng.random() >= KNOWN_CALLER_SHARE:
            continue
        holders = 2 if rng.random() < HOUSEHOLD_SHARE else 1
        for _ in range(holders):
            owner = _take(pools, _languages_for(e164))
            if owner is not None:
                owner.numbers.append(raw)
    return seen


def _languages_for(e164: str) -> tuple[str, ...]:
    for code, languages in LANGUAGES_BY_CODE.items():
        if e164.startswith(code):
            return languages
    return ()


def _take(pools: dict[str, list[_Planned]], preferred: tuple[str, ...]) -> _Planned | None:
    for language in preferred:
        if pools[language]:
            return pools[language].pop()
    largest = max(pools.values(), key=len)
    return largest.pop() if largest else None


def _customer(
    rng: random.Random, p: _Planned, phones: PhoneNormalizer, taken: set[str]
) -> CustomerIn:
    name = _company_name(rng, p.language) if p.kind == "company" else _person_name(rng, p.language)
    tier = rng.choices(
        ("vip", "regular", "low"), (15, 75, 10) if p.kind == "company" else (5, 75, 20)
    )
    numbers = [*p.numbers]
    for _ in range(rng.choice((1, 1, 1, 2)) if not numbers else rng.choice((0, 0, 0, 1))):
        numbers.append(_fresh_number(rng, p, phones, taken))
    raw = CustomerIn(
        external_id=_demo_id(p.index),
        kind=p.kind,
        name=name,
        company_external_id=None if p.company is None else _demo_id(p.company),
        email=None if rng.random() < 0.1 else _email(rng, name, p),
        address=rng.choice(STREETS[p.language]).format(n=rng.randint(1, 400)),
        owner=rng.choice(AGENTS)
        if p.kind == "company" or tier[0] == "vip" or rng.random() < 0.4
        else None,
        language=p.language,
        tier=tier[0],  # planned: the orders drawn for it make the rules say so (mostly)
        lifecycle=rng.choices(PLANNED_STAGES, (10, 8, 50, 7, 15, 10))[0],
        tags=tuple(rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3)))),
        phones=tuple(numbers),
    )
    return validate(raw, phones)


def _demo_id(index: int) -> str:
    return f"{PREFIX}{index + 1:05d}"


def _person_name(rng: random.Random, language: str) -> str:
    if language == "zh":
        return rng.choice(SURNAMES_ZH) + rng.choice(GIVEN_ZH)
    return f"{rng.choice(FIRST[language])} {rng.choice(LAST[language])}"


def _company_name(rng: random.Random, language: str) -> str:
    first, middle, last = (rng.choice(words) for words in COMPANIES[language])
    return f"{first}{middle}{last}" if language == "zh" else f"{first} {middle} {last}"


def _email(rng: random.Random, name: str, p: _Planned) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = ["".join(ch for ch in w if ch.isalnum()).lower() for w in ascii_name.split()]
    local = ".".join(w for w in words if w)[:30] or rng.choice(("wei", "na", "fang", "lei"))
    if p.kind == "company":
        return f"info@{local.replace('.', '-')}{p.index}.example.com"
    return f"{local}{p.index}@example.{rng.choice(('com', 'net', 'org'))}"


def _fresh_number(rng: random.Random, p: _Planned, phones: PhoneNormalizer, taken: set[str]) -> str:
    """A number nobody has yet: a second holder only ever comes from a planned household."""
    while True:
        raw = _random_number(rng, p.language, p.kind)
        e164 = phones.to_e164(raw)
        if e164 is not None and e164 not in taken:
            taken.add(e164)
            return raw


def _random_number(rng: random.Random, language: str, kind: str) -> str:
    """A number in one of the simulator's spellings, of the customer's country."""
    digits = "".join(rng.choice("0123456789") for _ in range(8))
    if language == "zh":
        if kind == "company":
            return f"+86 21 {digits}"
        mobile = rng.choice(("138", "139", "135", "150", "186"))
        return rng.choice((f"{mobile}{digits}", f"+86 {mobile} {digits[:4]} {digits[4:]}"))
    if language == "de":
        return f"+49 30 {digits}"
    if language == "en" or language == "fr":
        return rng.choice((f"+44 20 7946 {digits[:4]}", f"+1 555 010 {digits[:4]}"))
    return f"+1 555 010 {digits[:4]}"


# days ago the orders of a planned stage are drawn from (the rules then say new, active, ...)
STAGE_DAYS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "prospect": (0, 60),  # no orders: for the other entries
        "new": (0, 80),
        "active": (0, 180),
        "won_back": (300, 700),  # and the last one recent
        "lapsed": (200, 700),
        "lost": (400, 900),
    }
)


def _order_plan(rng: random.Random, kind: str, tier: str) -> tuple[int, tuple[int, int]]:
    """How many orders, and the range of their amounts in cents, for a planned tier."""
    if tier == "vip":
        return rng.randint(5, 12), (500_000, 5_000_000) if kind == "company" else (100_000, 500_000)
    if tier == "low":
        return 1, (990, 20_000)
    return rng.randint(1, 4), (50_000, 1_000_000) if kind == "company" else (990, 299_900)


def _answers(
    rng: random.Random, timeline: list[InteractionIn], now: datetime
) -> list[dict[str, Any]]:
    """Survey answers (the IVR's ``attitude``, 1-5) for about half the calls older than a
    day (today's would move the wallboard's CSAT of the demo agents)."""
    found = []
    for e in timeline:
        if e.kind != "call" or e.occurred_at > now - timedelta(days=1):
            continue
        if rng.random() < SURVEY_SHARE:
            found.append(
                {
                    "pbx": DEMO_PBX,
                    "call_id": e.call_id,
                    "agent": e.agent,
                    "question": "attitude",
                    "score": rng.choices((1, 2, 3, 4, 5), (6, 8, 14, 34, 38))[0],
                    "created_at": e.occurred_at,
                }
            )
    return found


def _timeline(
    rng: random.Random, p: _Planned, c: CustomerIn, now: datetime, seed: int
) -> list[InteractionIn]:
    """The customer's story: orders, tickets, e-mails, notes, calls with outcomes, follow-ups."""
    entry = _EntryMaker(_demo_id(p.index), now)
    early, late = STAGE_DAYS[c.lifecycle]
    out: list[InteractionIn] = []
    if c.lifecycle != "prospect" and p.company is None:  # a company's contacts order for it
        count, (low, high) = _order_plan(rng, p.kind, c.tier)
        days = [rng.uniform(early, late) for _ in range(count)]
        if c.lifecycle == "won_back":  # back after a long silence
            days[-1] = rng.uniform(1, 60)
        for ago in days:
            cents = Decimal(rng.randint(low, high)).scaleb(-2)
            order = f"WO-{rng.randint(100_000, 999_999)}"
            items = f"{rng.randint(1, 6)} item(s), paid online"
            state = "processing" if ago < 2 else "shipped" if ago < 7 else "delivered"
            if rng.random() < 0.04:
                state = rng.choice(("cancelled", "returned"))  # no purchase for the segments
            out.append(
                entry("order", ago, f"Web order {order}", body=items, amount=cents, status=state)
            )
    for _ in range(rng.choices((0, 1, 2), (50, 35, 15))[0]):
        ago = rng.uniform(0, late + 30)
        status = "open" if ago < 30 and rng.random() < 0.5 else "closed"
        body = f"Ticket #{rng.randint(10_000, 99_999)} opened from the web form"
        out.append(entry("ticket", ago, rng.choice(TICKETS), body=body, status=status))
    for _ in range(rng.choices((0, 1, 2, 3), (30, 35, 20, 15))[0]):
        out.append(entry("email", rng.uniform(0, late + 30), rng.choice(EMAILS)))
    if rng.random() < 0.4:
        out.append(entry("note", rng.uniform(0, 400), rng.choice(NOTES), agent=rng.choice(AGENTS)))
    call_days = [rng.uniform(1, 365) for _ in range(rng.choices((0, 1, 2, 3), (35, 35, 20, 10))[0])]
    if rng.random() < 0.08:
        call_days.append(rng.uniform(0.02, 0.9))  # called within the last day: a repeat caller
    for number, ago in enumerate(call_days):
        agent = rng.choice(AGENTS)
        call_id = f"{PREFIX}{seed}-{p.index}-{number}"
        queue = rng.choice(("support", "sales"))
        out.append(
            entry("call", ago, f"Call answered ({queue}; {agent})", call_id=call_id, agent=agent)
        )
        drawn = rng.random() < 0.6
        if drawn or ago < 1:  # a call of the last day has its outcome: the demo requires them
            disposition = rng.choice(DISPOSITIONS) if drawn else "resolved"
            out.append(
                entry(
                    "outcome",
                    ago - 0.003,
                    disposition,
                    status="closed",
                    call_id=call_id,
                    agent=agent,
                )
            )
    if rng.random() < 0.12:
        owner = c.owner or rng.choice(AGENTS)
        due = now + timedelta(days=rng.uniform(-3, 7))
        title = rng.choice(FOLLOWUPS)
        out.append(
            entry("followup", rng.uniform(1, 10), title, status="open", due_at=due, owner=owner)
        )
    return out


class _EntryMaker:
    """Builds validated timeline entries ``days`` before ``now``, to the second."""

    def __init__(self, customer: str, now: datetime) -> None:
        self.customer = customer
        self.now = now

    def __call__(self, kind: str, days: float, title: str, **fields: Any) -> InteractionIn:
        when = (self.now - timedelta(days=max(days, 0.0))).replace(microsecond=0)
        due = fields.pop("due_at", None)
        return validate_interaction(
            InteractionIn(
                customer_external_id=self.customer,
                kind=kind,
                occurred_at=when,
                title=title,
                due_at=due.replace(microsecond=0) if due is not None else None,
                **fields,
            )
        )


# -- writing (in bulk: a few statements per few hundred rows, not per row) -----------------


async def _remove_demo(session: AsyncSession) -> int:
    demo = Customer.external_id.startswith(PREFIX, autoescape=True)
    count = await session.scalar(select(func.count()).select_from(Customer).where(demo))
    await session.execute(delete(Customer).where(demo))
    # their survey answers too (kept by a deleted customer as nobody's, they would collide
    # with the same demo calls seeded again)
    seeded_calls = CallScore.pbx == DEMO_PBX, CallScore.call_id.startswith(PREFIX, autoescape=True)
    await session.execute(delete(CallScore).where(*seeded_calls))
    return count or 0


async def _segments(engine: AsyncEngine) -> tuple[Counts, Counts]:
    """The demo customers by tier and by lifecycle stage, as computed."""
    demo = Customer.external_id.startswith(PREFIX, autoescape=True)
    async with AsyncSession(engine) as session:

        async def count(column: Any) -> Counts:
            query = select(column, func.count()).where(demo).group_by(column).order_by(column)
            return tuple((name, n) for name, n in await session.execute(query))

        return await count(Customer.tier), await count(Customer.lifecycle)


async def _save(session: AsyncSession, records: Sequence[CustomerIn], now: datetime) -> list[int]:
    """The customers' ids, in order. They come from :func:`validate` and the demo ids were
    just freed, so a refusal here is a bug in this module."""
    ids: list[int] = []
    for result in await save_customers(session, records, now=now):
        if isinstance(result, CustomerError):
            raise RuntimeError(f"demo data refused by the store: {result}")
        ids.append(result.id)
    return ids
