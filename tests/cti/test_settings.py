"""Settings: file + environment layering, clear errors, secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from cti.agents import AgentDirectory
from cti.settings import SettingsError, load

EXAMPLE = Path(__file__).parent.parent.parent / "config" / "cti.example.toml"


def test_example_config_loads_and_env_overrides() -> None:
    settings = load(EXAMPLE, env={"CTI_PBX_PARIS_SECRET": "s3cret", "CTI_PBX_PARIS_PORT": "6038"})
    (pbx,) = settings.pbxs
    assert (pbx.name, pbx.port, pbx.secret) == ("paris", 6038, "s3cret")
    assert "s3cret" not in repr(settings)
    directory = AgentDirectory(settings.agents)
    assert directory.resolve("Alice", "Local/1001@agents/n") == "alice"
    assert directory.agent_for_device("PJSIP/1002-0000000a") == "bob"
    assert (settings.ivr.port, settings.ivr.menus_dir) == (4573, "config/ivr")


def test_defaults_without_a_file() -> None:
    (pbx,) = load(None, env={}).pbxs
    assert (pbx.name, pbx.host, pbx.port) == ("default", "127.0.0.1", 5038)
    assert load(None, env={}).ivr.menus_dir == ""  # no menus, no FastAGI server


def test_wallboard_rules(tmp_path: Path) -> None:
    path = tmp_path / "cti.toml"
    path.write_text(
        "[wallboard]\nshort_abandon = 3\ntimezone = 'Asia/Shanghai'\n"
        "[wallboard.weights]\navailability = 1\nresolution = 3\n"
        "[wallboard.queues.default]\nalert_longest_wait = 90\n"
        "[wallboard.queues.vip]\nservice_level = 10\nalert_waiting = 2\n"
    )
    rules = load(path, env={}).wallboard
    assert (rules.short_abandon, str(rules.timezone)) == (3.0, "Asia/Shanghai")
    assert (rules.weights.availability, rules.weights.resolution) == (1.0, 3.0)
    assert rules.weights.customer_rating == 0.2  # the default where not given
    assert rules.for_queue("sales").alert_longest_wait == 90.0
    vip = rules.for_queue("vip")
    assert (vip.service_level, vip.alert_waiting, vip.alert_longest_wait) == (10.0, 2, 60.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pbx.x]\nhots = 'typo'\n", "unknown keys ['hots']"),
        ("[pbx.x]\nport = 'abc'\n", "[pbx.x]"),
        ("[[agents]]\nname = 'no id'\n", "without id"),
        ("not toml = = =", "cannot read config"),
        ("[ivr]\nmenu_dir = 'typo'\n", "[ivr]: unknown keys ['menu_dir']"),
        ("[ivr]\nport = 'x'\n", "[ivr]"),
        ("[ivr]\nallowed_peers = []\n", "[ivr]: allowed_peers is empty"),
        ("[ivr]\nallowed_peers = ['pbx.example']\n", "'pbx.example' is not an IP address"),
        ("[ivr]\nallowed_peers = ['10.0.0.1/8']\n", "'10.0.0.1/8' is not an IP address"),
        ("[ivr]\nallowed_peers = '10.0.0.5'\n", "allowed_peers must be a list"),
        ("[ivr]\nsecret = 'a&b'\n", "[ivr]: secret must be ASCII"),
        ("[ivr]\npin_failures = 0\n", "[ivr]: pin_failures must be ≥ 1"),
        ("[ivr]\npin_lockout = 0\n", "pin_lockout > 0"),
        ("[wallboard]\nshort = 3\n", "[wallboard]: unknown keys ['short']"),
        ("[wallboard]\ntimezone = 'Mars/Base'\n", "timezone 'Mars/Base' unknown"),
        ("[wallboard.weights]\nluck = 1.0\n", "[wallboard]"),
        ("[wallboard.weights]\nresolution = -1\n", "must not be negative"),
        ("[wallboard.queues.q]\nservice_level = 'soon'\n", "[wallboard.queues.q]"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cti.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path, env={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config"):
        load(tmp_path / "nope.toml", env={})


def test_ivr_peers_default_to_loopback_and_the_pbx_hosts(tmp_path: Path) -> None:
    path = tmp_path / "cti.toml"
    path.write_text("[pbx.paris]\nhost = '10.0.0.5'\n[pbx.lyon]\nhost = 'pbx.lyon.example'\n")
    ivr = load(path, env={"CTI_IVR_SECRET": "from-env"}).ivr
    assert ivr.allowed_peers == ("127.0.0.0/8", "::1", "10.0.0.5", "pbx.lyon.example")
    assert ivr.secret == "from-env" and "from-env" not in repr(ivr)
    path.write_text("[ivr]\nallowed_peers = [' 10.0.0.0/24 ', '::1']\npin_failures = 3\n")
    ivr = load(path, env={}).ivr
    assert (ivr.allowed_peers, ivr.pin_failures, ivr.secret) == (("10.0.0.0/24", "::1"), 3, "")
