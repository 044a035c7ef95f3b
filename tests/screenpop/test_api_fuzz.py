"""The JSON API fuzzed against its OpenAPI document (issue 22): schemathesis generates requests
for every operation of screenpop/openapi.json and sends them to the real app on a loopback port
(SQLite store with seeded customers and follow-ups, the PBX simulator behind the controls and
callbacks, a board, the CRM's token), as a logged-in agent and a logged-in supervisor (cookie and
CSRF header on every request) and as the CRM (bearer token). Every answer must not be a server
error, and must conform to the document: a documented status, a documented content type, a body
that matches its schema.

``API_FUZZ_EXAMPLES`` (default 20: about a minute on two cores) is the number of generated
cases per operation and account;
under ``CI`` the generation is derandomized, so a run is repeatable. The cases run are printed
at the end of the pytest run (tests/screenpop/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crm_sync.db import create_engine
from crm_sync.followups import Followups
from crm_sync.migrate import upgrade
from cti.board import Board
from cti.call_control import CallControls
from cti.callbacks import CallbackDialer
from cti.calls import CallTracker
from cti.controls import MemberControls
from cti.events import MemberUpdated
from cti.settings import AgentSettings, FollowupSettings, PbxSettings
from screenpop import openapi
from screenpop.followups_api import FollowupDesk
from tests.screenpop.test_followups_api import add_followups
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    build_app,
    new_pop,
    new_store,
    seed,
    served,
    simulated_pbx,
)

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "20"))
CRM_TOKEN = "fuzz-crm-token"
ALICE = "Local/1001@agents/n"  # Alice's interface in the simulator's support queue
AGENTS = (AgentSettings("Alice", members=("Alice", ALICE)), AgentSettings("Bob", members=("Bob",)))
FOLLOWUPS = FollowupSettings(contact_max=2, ring_seconds=0.5)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Known failures, by "METHOD path": the reason, and who fixes it. Each is reported by the test
# (xfail) while it fails, and the test fails once it passes (remove it then).
KNOWN: dict[str, str] = {}  # operation -> why it still fails (none now)


@dataclass
class Caller:
    """How generated requests are sent: a session (cookie) and headers, or the CRM's token."""

    name: str
    session: requests.Session
    headers: dict[str, str]

    @property
    def cookies(self) -> dict[str, str]:
        """Sent explicitly: they win over the values generated for the document's cookie."""
        return self.session.cookies.get_dict()


@dataclass
class Tally:
    cases: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)


def _login(base: str, login: str) -> Caller:
    """Log in through the form, as a browser does; the CSRF token from the agent page."""
    session = requests.Session()

    def token(html: str) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, "no csrf_token in the page"
        return match.group(1)

    form = token(session.get(f"{base}/login", timeout=10).text)
    answer = session.post(
        f"{base}/login",
        data={"login": login, "password": PASSWORDS[login], "csrf_token": form, "next": "/"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303, answer.text
    page = session.get(f"{base}/", timeout=10)
    return Caller(login, session, {"X-CSRF-Token": token(page.text)})


async def _serve(tmp: Path, ready: Future[str], stop: asyncio.Event) -> None:
    """The whole app on a loopback port until ``stop``: what `cti serve` assembles, smaller."""
    url = f"sqlite:///{tmp / 'fuzz.sqlite3'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    store = new_store(engine)
    pop = new_pop(store)
    try:
        async with simulated_pbx() as (server, ami):
            tracker = CallTracker(PBX)  # the simulator's calls, as the service follows them
            server.observers.append(tracker.on_event)
            await add_followups(pop, await seed(store))
            board = Board(agents=AGENTS)
            board.observe(
                MemberUpdated(
                    PBX, time.time(), "support", "Alice", "Alice", ALICE, 1, False, "", False, 0.0
                )
            )
            dialer = CallbackDialer({PBX: ami}, AGENTS, FOLLOWUPS)
            desk = FollowupDesk(Followups(store.sessions, FOLLOWUPS), dialer, board.queues_of)
            app = build_app(
                pop,
                store,
                board=board,
                controls=MemberControls({PBX: ami}, AGENTS, timeout=2.0),
                call_controls=CallControls(
                    {PBX: ami},
                    [PbxSettings(name=PBX)],
                    AGENTS,
                    lambda _pbx, call_id, agent: tracker.leg(call_id, agent),
                    board.queue_names,
                    timeout=2.0,
                ),
                followups=desk,
                crm_token=CRM_TOKEN,
            )
            async with served(app) as base:
                ready.set_result(base)
                await stop.wait()
    finally:
        await pop.close()
        await engine.dispose()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served by its own event loop in a thread: schemathesis' calls are blocking."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: Future[str] = Future()
    tmp = tmp_path_factory.mktemp("fuzz")

    def run() -> None:
        try:
            loop.run_until_complete(_serve(tmp, ready, stop))
        except BaseException as exc:  # the test must hear why the app did not start
            if not ready.done():
                ready.set_exception(exc)
            raise

    thread = threading.Thread(target=run, name="fuzzed-app")
    thread.start()
    try:
        yield ready.result(timeout=60)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def _fuzz(operation: Any, caller: Caller, base: str, tally: Tally) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    key = f"{label} as {caller.name}"

    @settings(
        max_examples=EXAMPLES,
        derandomize=bool(os.environ.get("CI")),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is kept below
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        tally.cases[key] = tally.cases.get(key, 0) + 1
        response = case.call(
            base_url=base, session=caller.session, headers=caller.headers, cookies=caller.cookies
        )
        try:
            case.validate_response(response, checks=CHECKS, headers=caller.headers)
        except FailureGroup as exc:  # what the checks found, a few lines each
            found = tally.failures.setdefault(label, [])
            if len(found) < 3:
                found.append(f"{caller.name}: {str(exc).strip().splitlines()[0:6]}")

    run()


def test_every_operation_answers_as_documented(
    base_url: str, request: pytest.FixtureRequest
) -> None:
    schema = schemathesis.openapi.from_dict(json.loads(openapi.document()))
    crm = Caller("crm", requests.Session(), {"Authorization": f"Bearer {CRM_TOKEN}"})
    people = [_login(base_url, "alice"), _login(base_url, "sue")]
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        for caller in [crm] if operation.path.startswith("/api/crm/") else people:
            _fuzz(operation, caller, base_url, tally)
    total = sum(tally.cases.values())
    request.node.user_properties.append(
        ("api fuzz cases", (dict(sorted(tally.cases.items())), total))
    )
    assert total >= EXAMPLES  # the generator did run
    unexpected = {op: lines for op, lines in tally.failures.items() if op not in KNOWN}
    fixed = sorted(op for op in KNOWN if op not in tally.failures)
    assert not unexpected, json.dumps(unexpected, indent=1, ensure_ascii=False)
    assert not fixed, f"known failures that pass now: remove them from KNOWN: {fixed}"
    if tally.failures:
        pytest.xfail("; ".join(f"{op}: {KNOWN[op]}" for op in sorted(tally.failures)))


def test_an_answer_off_the_document_is_caught(base_url: str) -> None:
    """The checks bite: with a /api/me that the document says has a field it never sends, every
    case of that operation is a failure."""
    doc = json.loads(openapi.document())
    doc["components"]["schemas"]["Me"]["required"].append("never_sent")
    operation = schemathesis.openapi.from_dict(doc)["/api/me"]["GET"]
    tally = Tally()
    _fuzz(operation, _login(base_url, "bob"), base_url, tally)
    assert tally.cases == {"GET /api/me as bob": EXAMPLES}
    [(label, lines)] = tally.failures.items()
    assert label == "GET /api/me"
    assert "never_sent" in lines[0]
