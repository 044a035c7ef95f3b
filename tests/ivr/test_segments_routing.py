"""The IVR routes by the segments the rules computed: customers whose tier and lifecycle come
from their orders (crm_sync.segmenting), found by caller ID through the IVR's store, walk the
shipped main menu (config/ivr/main.toml) to the queue with the VIP priority and the win-back
flag their stage calls for; every lifecycle stage the rules produce is one a menu may name."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.customers import InteractionIn, add_interaction
from crm_sync.models import LIFECYCLES, Customer, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.segmenting import recompute_stale
from crm_sync.segments import DEFAULT_RULES
from crm_sync.store import CustomerStore
from ivr.menus import MenuError, load_menu
from ivr.store import IvrStore
from ivr.walk import CallerInfo, Collected, CustomersFound, FindCustomer, Played, Route, Walk
from tests.ivr.test_ivr_walk import MAIN, budget, drive, main_menu, welcome

PHONES = PhoneNormalizer("CN")
ORDERS = {  # days ago and amount of each order: what makes each customer what it is
    "+8613800000001": [(3, "9000"), (30, "9000"), (60, "9000"), (120, "9000")],  # VIP, active
    "+8613800000002": [(200, "90"), (500, "90")],  # low, lapsed
    "+8613800000003": [(20, "300"), (400, "300")],  # won back
    "+8613800000004": [(5, "300")],  # new
    "+8613800000005": [],  # prospect
}
ROUTES = {  # the shipped menu: VIP priority 10, the account owner first, lapsed/lost win-back
    "+8613800000001": ("vip", "active", Route("support", 10, "bob", False)),
    "+8613800000002": ("low", "lapsed", Route("support", 0, "bob", True)),
    "+8613800000003": ("regular", "won_back", Route("support", 0, "bob", False)),
    "+8613800000004": ("regular", "new", Route("support", 0, "bob", False)),
    "+8613800000005": ("regular", "prospect", Route("support", 0, "bob", False)),
}


async def test_the_menu_routes_by_the_computed_segments(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        for number, orders in ORDERS.items():
            customer = Customer(
                kind="person",
                name=f"Customer {number[-1]}",
                owner="bob",
                tags=[],
                created_at=now - timedelta(days=900),
                updated_at=now,
            )
            session.add(customer)
            await session.flush()
            session.add(Phone(customer_id=customer.id, e164=number))
            for days, amount in orders:
                entry = InteractionIn(
                    None,
                    "order",
                    now - timedelta(days=days),
                    "Web order",
                    amount=Decimal(amount),
                    customer_id=customer.id,
                )
                await add_interaction(session, entry)
    await recompute_stale(sessions, DEFAULT_RULES, now=now)

    ivr = IvrStore(engine, CustomerStore(engine, PHONES), PHONES, clock=lambda: now)
    try:
        for number, (tier, lifecycle, route) in ROUTES.items():
            found = await ivr.find_by_phone(number)
            assert [(c.tier, c.lifecycle) for c in found] == [(tier, lifecycle)], number
            walk = Walk(MAIN, CallerInfo(number, "en"))
            script = [
                (welcome(), Played()),
                (FindCustomer("phone", number, budget()), CustomersFound(found)),
                (main_menu(), Collected("3")),  # "talk to support"
            ]
            assert drive(walk, script) == route, number
    finally:
        await ivr.store.close()


def test_a_menu_may_name_every_stage_the_rules_compute(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    text = (
        'name = "m"\nstart = "q"\nlanguages = ["en"]\nfallback = "q"\n[routing]\n'
        f"winback_lifecycles = {json.dumps(list(LIFECYCLES))}\n"
        '[steps.q]\ntype = "route"\nqueue = "support"\n'
    )
    path.write_text(text, encoding="utf-8")
    assert load_menu(path).routing.winback_lifecycles == LIFECYCLES
    path.write_text(text.replace('"won_back"', '"won-back"'), encoding="utf-8")
    with pytest.raises(MenuError, match="won-back"):
        load_menu(path)
