"""Accounts, password hashes, sessions, login throttling and dispositions: the pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cti.hashing import HashError, hash_password, verify_password
from cti.settings import AgentSettings
from screenpop.auth import (
    Account,
    Accounts,
    AccountsError,
    LoginLimiter,
    SessionStore,
    Throttle,
)
from screenpop.dispositions import Dispositions, DispositionsError

ROOT = Path(__file__).parent.parent.parent
CHEAP = 2**10  # scrypt cost for tests that do not test the cost


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_password_hash_format_and_check() -> None:
    encoded = hash_password("s3cret é", n=CHEAP)
    scheme, n, r, p, _salt, _digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(CHEAP), "8", "1")
    assert verify_password("s3cret é", encoded)
    assert not verify_password("s3cret e", encoded)
    assert hash_password("s3cret é", n=CHEAP) != encoded  # a fresh salt every time
    assert hash_password("x").split("$")[1] == str(2**14)  # the default cost


@pytest.mark.parametrize(
    "bad",
    [
        "plain-text",
        "bcrypt$1$2$3$AAAA$BBBB",
        "scrypt$1000$8$1$c2FsdHNhbHQ=$ZGlnZXN0ZGlnZXN0ZGlnZXN0",  # n not a power of two
        "scrypt$2097152$8$1$c2FsdHNhbHQ=$ZGlnZXN0ZGlnZXN0ZGlnZXN0",  # n too costly
        "scrypt$1024$8$1$not base64!$ZGlnZXN0ZGlnZXN0ZGlnZXN0",
    ],
)
def test_malformed_hashes_are_refused(bad: str) -> None:
    with pytest.raises(HashError):
        verify_password("pw", bad)


def test_accounts_verify_by_login_case_insensitively() -> None:
    accounts = Accounts(
        [Account("Alice", "Alice A", "Alice", "agent", hash_password("pw", n=CHEAP))]
    )
    alice = accounts.get("alice")
    assert alice is not None and accounts.verify("ALICE", "pw") is alice
    assert accounts.verify("alice", "wrong") is None
    assert accounts.verify("mallory", "pw") is None  # checked against a decoy, same cost
    assert "scrypt" not in repr(alice)  # the hash never reaches a log line through repr
    assert alice.public() == {
        "login": "Alice",
        "name": "Alice A",
        "agent_id": "Alice",
        "role": "agent",
    }


def test_the_example_accounts_file_loads_and_its_passwords_work() -> None:
    accounts = Accounts.load(ROOT / "config" / "accounts.example.toml")
    assert [(a.login, a.agent_id, a.role) for a in accounts] == [
        ("alice", "alice", "agent"),
        ("bob", "bob", "agent"),
        ("sue", "", "supervisor"),
    ]
    assert accounts.verify("bob", "bob-demo") is accounts.get("bob")
    assert accounts.agent_ids() == ("alice", "bob")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('login = "a"\nrole = "agent"\nagent_id = "A"', "missing"),
        ('login = "a"\nrole = "boss"\nagent_id = "A"\npassword_hash = "{h}"', "role"),
        ('login = "a"\nrole = "agent"\npassword_hash = "{h}"', "agent_id"),
        ('login = "a"\nrole = "agent"\nagent_id = "A"\npassword_hash = "{h}"\nadmin = "1"',
         "unknown"),
        ('login = "a"\nrole = "agent"\nagent_id = "A"\npassword_hash = "{h}"\n[[accounts]]\n'
         'login = "A"\nrole = "agent"\nagent_id = "B"\npassword_hash = "{h}"', "twice"),
    ],
)  # fmt: skip
def test_bad_accounts_files_say_what_is_wrong(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text("[[accounts]]\n" + body.replace("{h}", hash_password("pw", n=CHEAP)))
    with pytest.raises(AccountsError, match=problem):
        Accounts.load(path)


def test_demo_accounts_for_configured_agents() -> None:
    accounts = Accounts.for_agents(
        [AgentSettings("Alice", "Alice Liddell"), AgentSettings("Bob")], "demo"
    )
    assert [(a.login, a.name, a.agent_id) for a in accounts] == [
        ("alice", "Alice Liddell", "Alice"),
        ("bob", "Bob", "Bob"),
    ]
    assert accounts.verify("bob", "demo") is accounts.get("bob")


async def test_sessions_have_their_own_tokens_and_expire_when_idle() -> None:
    clock = FakeClock()
    account = Account("a", "A", "A", "agent", hash_password("pw", n=CHEAP))
    store = SessionStore(Accounts([account]), idle=60, clock=clock)  # memory only
    one, two = await store.create(account), await store.create(account)
    assert len({one.token, two.token, one.csrf, two.csrf}) == 4
    assert len(one.token) >= 43  # 32 random bytes
    assert one.csrf_ok(one.csrf) and not one.csrf_ok(two.csrf) and not one.csrf_ok(None)
    clock.t += 50
    assert await store.load(one.token) is one  # used: its idle time starts again
    clock.t += 50
    assert store.get(one.token) is one
    assert await store.load(two.token) is None  # idle for 100 s
    assert await store.end(one.token) is one and await store.load(one.token) is None
    assert await store.load(None) is None and await store.load("forged") is None


def test_login_limiter_slows_a_login_from_an_address_and_never_locks_it() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(pair=Throttle(5, 1.0, 60.0, 300.0), clock=clock)
    for _ in range(5):
        assert limiter.start("Alice", "192.0.2.1").wait == 0  # charged before any check
    clock.t += 0.25
    refused = limiter.start("ALICE", "192.0.2.1")
    assert refused.wait == pytest.approx(0.75)  # 1 s after the last attempt
    limiter.succeeded(refused)  # a refused attempt was never charged: nothing to refund
    assert limiter.start("alice", "192.0.2.1").wait == pytest.approx(0.75)
    assert limiter.start("bob", "192.0.2.1").wait == 0  # per login
    assert limiter.start("alice", "192.0.2.2").wait == 0  # per address
    clock.t += 1
    right = limiter.start("alice", "192.0.2.1")
    assert right.wait == 0
    limiter.succeeded(right)  # the pair's failures are forgotten
    assert [limiter.start("alice", "192.0.2.1").wait for _ in range(5)] == [0.0] * 5


def test_login_limiter_memory_is_bounded() -> None:
    limiter = LoginLimiter(max_keys=100, clock=FakeClock())
    for i in range(1000):
        limiter.succeeded(limiter.start(f"guess{i}", f"10.0.{i // 250}.{i % 250}"))
        limiter.start(f"guess{i}", "192.0.2.1")
    counts = [limiter._pairs.seen, limiter._addresses.seen, limiter._logins.seen]
    assert [len(c) <= 100 for c in counts] == [True] * 3
    assert len(limiter._trusted) == 100


def test_dispositions_file_loads() -> None:
    dispositions = Dispositions.load(ROOT / "config" / "dispositions.toml")
    assert dispositions.require_outcome is True
    assert dispositions.items[0].code == "resolved"
    callback = dispositions.get("callback")
    assert callback is not None and callback.label == "Callback needed"
    assert callback.needs_customer is True
    wrong = dispositions.get("wrong_number")
    assert wrong is not None and wrong.needs_customer is False  # nobody's matter
    assert dispositions.get("nope") is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"disposition": []}, "at least one"),
        ({"disposition": [{"code": "A B", "label": "x"}]}, "a-z"),
        ({"disposition": [{"code": "a", "label": " "}]}, "label"),
        ({"disposition": [{"code": "a", "label": "x"}, {"code": "a", "label": "y"}]}, "twice"),
        ({"disposition": [{"code": "a"}]}, "code and label"),
        ({"disposition": [{"code": "a", "label": "x", "colour": "red"}]}, "code and label"),
        ({"disposition": [{"code": "a", "label": "x", "customer": "no"}]}, "customer must be"),
        ({"require_outcome": "yes", "disposition": [{"code": "a", "label": "x"}]}, "true or false"),
        ({"dispositions": []}, "unknown"),
    ],
)
def test_bad_dispositions_say_what_is_wrong(raw: dict[str, object], problem: str) -> None:
    with pytest.raises(DispositionsError, match=problem):
        Dispositions.from_dict(raw)
