"""Login abuse (issue 22): parallel guesses, lockout as a denial of service, hostile ``next``.

The limiter's unit tests drive it with a fake clock and explicit addresses; the HTTP tests
send real requests, from a second loopback address (127.0.0.2) where a stranger is needed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, expect

from screenpop.auth import ADDRESS, LOGIN, PAIR, Account, LoginLimiter, Throttle
from screenpop.keys import ACCOUNTS
from tests.support.screenpop import PASSWORDS, build_app, new_pop, served

Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def waits_after_failures(
    limiter: LoginLimiter, clock: FakeClock, login: str, address: str, tries: int
) -> list[float]:
    """Fail ``tries`` times as fast as allowed; the wait met before each try."""
    met = []
    for _ in range(tries):
        attempt = limiter.start(login, address)
        met.append(attempt.wait)
        if attempt.wait > 0:
            clock.t += attempt.wait
            assert limiter.start(login, address).wait == 0  # allowed once the wait is over
    return met


# -- the limiter, by its clock ---------------------------------------------------------------


def test_an_attempt_counts_before_its_password_is_checked() -> None:
    limiter = LoginLimiter(clock=FakeClock())
    started = [limiter.start("sue", "192.0.2.1") for _ in range(40)]  # none has finished
    assert [a.wait for a in started[: PAIR.free]] == [0.0] * PAIR.free
    assert all(a.wait > 0 for a in started[PAIR.free :])


def test_delays_double_and_are_capped() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock=clock)
    met = waits_after_failures(limiter, clock, "alice", "192.0.2.1", 13)
    assert met[: PAIR.free] == [0.0] * PAIR.free
    assert met[PAIR.free :] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]  # capped at 60 s
    clock.t += 59
    assert limiter.start("alice", "192.0.2.1").wait == pytest.approx(1.0)
    clock.t += 13 * PAIR.leak
    assert limiter.start("alice", "192.0.2.1").wait == 0  # quiet long enough: all leaked out


def test_a_strangers_failures_do_not_stop_the_right_password_from_elsewhere() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock=clock)
    met = waits_after_failures(limiter, clock, "sue", "203.0.113.9", 3 * LOGIN.free)
    assert met[-1] == PAIR.cap  # the stranger is slowed, to a try a minute...
    mine = limiter.start("SUE", "192.0.2.1")
    assert mine.wait == 0  # ...and sue, from a desk she never used, is not slowed at all


def test_many_addresses_slow_a_login_to_its_cap_but_never_lock_it() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock=clock)
    usual = limiter.start("sue", "192.0.2.1")
    limiter.succeeded(usual)  # sue's desk: trusted from now on
    waits = []
    for i in range(LOGIN.free + 20):  # a botnet, one guess per address
        attempt = limiter.start("sue", f"198.51.100.{i % 250}")
        waits.append(attempt.wait)
        clock.t += attempt.wait
        if attempt.wait:
            assert limiter.start("sue", f"198.51.100.{i % 250}").wait == 0
    assert waits[: LOGIN.free] == [0.0] * LOGIN.free
    assert 0 < max(waits) <= LOGIN.cap
    assert limiter.start("sue", "192.0.2.77").wait > 0  # a new address waits its turn...
    assert limiter.start("sue", "192.0.2.1").wait == 0  # ...her usual desk does not


def test_one_address_spraying_many_logins_is_slowed() -> None:
    limiter = LoginLimiter(clock=FakeClock())
    met = [limiter.start(f"user{i}", "203.0.113.9").wait for i in range(ADDRESS.free + 1)]
    assert met[: ADDRESS.free] == [0.0] * ADDRESS.free and met[-1] > 0
    assert limiter.start("user0", "192.0.2.1").wait == 0  # another address is not


def test_a_success_refunds_its_attempt_and_forgets_the_pairs_failures() -> None:
    limiter = LoginLimiter(pair=Throttle(2, 1.0, 60.0, 300), clock=FakeClock())
    limiter.start("bob", "192.0.2.1")
    right = limiter.start("bob", "192.0.2.1")
    assert limiter.start("bob", "192.0.2.1").wait > 0
    limiter.succeeded(right)
    assert [limiter.start("bob", "192.0.2.1").wait for _ in range(3)] == [0, 0, 1.0]


def test_ipv6_clients_are_one_per_64() -> None:
    limiter = LoginLimiter(pair=Throttle(1, 1.0, 60.0, 300), clock=FakeClock())
    assert limiter.start("bob", "2001:db8:1:2::1").wait == 0
    assert limiter.start("bob", "2001:db8:1:2::ffff").wait > 0  # same /64: same client
    assert limiter.start("bob", "2001:db8:1:3::1").wait == 0
    assert limiter.start("bob", "::ffff:192.0.2.1").client == "192.0.2.1"


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
async def app() -> web.Application:
    return build_app(new_pop(None), None)


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def form_token(client: Client) -> str:
    page = await client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert match
    return match.group(1)


@pytest.mark.parametrize(("wrong", "right"), [(39, 1), (50, 0)])
async def test_parallel_guesses_get_no_more_checks_than_the_budget(
    app: web.Application, client: Client, wrong: int, right: int
) -> None:
    """All requests reach the limiter while the first checks are still running (each check
    waits until every request has been judged), so the old check-then-count order fails."""
    accounts = app[ACCOUNTS]
    real_verify = accounts.verify
    loop = asyncio.get_running_loop()
    progress = asyncio.Condition()
    checked: list[str] = []  # logins whose password was checked
    statuses: list[int] = []
    release = threading.Event()

    async def noted(item: str | int) -> None:
        async with progress:
            (checked if isinstance(item, str) else statuses).append(item)  # type: ignore[arg-type]
            progress.notify_all()

    def verify(login: str, password: str) -> Account | None:
        asyncio.run_coroutine_threadsafe(noted(login), loop)
        release.wait(10)
        return real_verify(login, password)

    accounts.verify = verify  # type: ignore[method-assign]
    token = await form_token(client)
    passwords = ["guess"] * wrong + [PASSWORDS["sue"]] * right

    async def post(password: str) -> None:
        form = {"login": "sue", "password": password, "csrf_token": token}
        response = await client.post("/login", data=form, allow_redirects=False)
        await noted(response.status)

    posts = [asyncio.create_task(post(p)) for p in passwords]
    try:
        async with asyncio.timeout(3), progress:
            await progress.wait_for(lambda: len(checked) + len(statuses) >= len(passwords))
    except TimeoutError:
        pass  # the old code gets here: more checks queued than the thread pool runs at once
    release.set()
    await asyncio.gather(*posts)
    # a success gives its attempt back, so the right password may let one more be checked
    # when the machine is slow to bring every request to the limiter before it is judged
    assert 0 < len(checked) <= PAIR.free + right
    assert statuses.count(429) == len(passwords) - len(checked)
    assert set(statuses) <= {401, 303, 429}


async def test_a_strangers_failures_do_not_lock_the_login_over_http(
    app: web.Application, client: Client
) -> None:
    async with aiohttp.ClientSession(
        str(client.make_url("/")),
        connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)),  # another address
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    ) as stranger:
        page = await stranger.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
        assert token
        form = {"login": "sue", "password": "guess", "csrf_token": token.group(1)}
        statuses = [
            (await stranger.post("/login", data=form, allow_redirects=False)).status
            for _ in range(PAIR.free + 3)
        ]
        assert statuses == [401] * PAIR.free + [429] * 3
        refused = await stranger.post("/login", data=form, allow_redirects=False)
        assert int(refused.headers["Retry-After"]) > 0
        assert "Too many failed attempts; try again in" in await refused.text()
    token = await form_token(client)
    form = {"login": "sue", "password": PASSWORDS["sue"], "csrf_token": token}
    response = await client.post("/login", data=form, allow_redirects=False)
    assert response.status == 303  # sue, from her own address, is not locked out


# each ``next`` as sent, percent-encoded; the Location it may give besides "/"
HOSTILE_NEXT = [
    ("%2F%09%2Fevil.example%2Fpath", None),  # a browser drops the tab: //evil.example/path
    ("%2F%0D%0A%2Fevil.example", None),
    ("%2F%0D%0ASet-Cookie:%20x=1", None),
    ("%2F%5Cevil.example", None),  # /\evil.example
    ("%2F%2F%5Cevil.example", None),
    ("%2Fa%5C..%5C%5Cevil.example", None),
    ("%2F%2Fevil.example", None),
    ("https%3A%2F%2Fevil.example", None),
    ("%2F%00", None),
    ("%2F%7F", None),
    ("%ED%A0%80", None),  # a lone surrogate, as UTF-8
    ("%2F%ED%A0%80", "/%EF%BF%BD%EF%BF%BD%EF%BF%BD"),  # decoded as U+FFFD: harmless
    ("%2F" + "a" * 7_000, None),  # long, but a request line aiohttp still reads (8 kB)
    ("%2F%2509%2Fevil.example", "/%09/evil.example"),  # a literal %09: a path here
    ("%2Fcustomers%2F1%3Ftab%3Dx", "/customers/1?tab=x"),
    ("%2F%E5%BC%A0", "/%E5%BC%A0"),  # non-ASCII: percent-encoded, still the same path
]


def browser_origin(location: str) -> str:
    """Where a browser goes for this Location from http://127.0.0.1:1/: it drops tab, CR and
    LF and reads a backslash as a slash (WHATWG URL)."""
    cleaned = re.sub(r"[\t\r\n]", "", location).replace("\\", "/")
    return urlsplit(urljoin("http://127.0.0.1:1/login", cleaned)).netloc


@pytest.mark.parametrize(("raw", "kept"), HOSTILE_NEXT)
async def test_hostile_next_never_leaves_the_site_nor_fails(
    client: Client, raw: str, kept: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = await form_token(client)
    body = f"login=alice&password={PASSWORDS['alice']}&csrf_token={token}&next={raw}"
    posted = await client.post(
        "/login",
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert posted.status == 303, await posted.text()
    # logged in now: the login page sends the browser on to ``next`` at once
    shown = await client.get(f"/login?next={raw}", allow_redirects=False)
    assert shown.status == 303
    for location in (posted.headers["Location"], shown.headers["Location"]):
        assert location in {"/", kept}
        assert browser_origin(location) == "127.0.0.1:1"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize(("raw", "kept"), HOSTILE_NEXT)
async def test_hostile_next_on_the_login_form_is_answered(
    client: Client, raw: str, kept: str | None
) -> None:
    page = await client.get(f"/login?next={raw}")
    assert page.status == 200
    match = re.search(r'name="next" value="([^"]*)"', await page.text())
    assert match and match.group(1) in {"/", kept}


@pytest.mark.parametrize("size", [10_000, 100_000])
async def test_a_very_long_next_in_the_form_sends_home(client: Client, size: int) -> None:
    form = {
        "login": "alice",
        "password": PASSWORDS["alice"],
        "csrf_token": await form_token(client),
        "next": "/" + "a" * size,
    }
    response = await client.post("/login", data=form, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/")


async def test_a_browser_sent_to_next_stays_on_the_site(
    browser: Browser, app: web.Application
) -> None:
    """The finding as a person meets it: a logged-in browser opening ``/login?next=/%09/host``
    is sent straight on to ``next``; Chromium drops the tab of ``/\\t/host`` and went to
    another origin (here another port on loopback). After the form, CSP's form-action
    happens to stop the same redirect; this path has no such net."""

    async def other_site(_: web.Request) -> web.Response:
        return web.Response(text="elsewhere")

    elsewhere = web.Application()
    elsewhere.router.add_get("/{tail:.*}", other_site)
    async with served(app) as site, served(elsewhere) as other:
        hostile = f"{site}/login?next=/%09/{other.removeprefix('http://')}/x"
        page = await (await browser.new_context()).new_page()
        await page.goto(hostile)
        await page.get_by_label("Login").fill("alice")
        await page.get_by_label("Password").fill(PASSWORDS["alice"])
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(f"{site}/")
        await page.goto(hostile)  # logged in: redirected at once
        await expect(page).to_have_url(f"{site}/")
