"""Typed settings, loaded once: defaults → TOML file → environment, then passed down.

Secrets (AMI passwords, the database URL) are kept out of ``repr`` so they never reach a
log line. Environment overrides: ``CTI_CONFIG`` (file path), ``CTI_LOG_LEVEL``,
``CTI_LOG_FORMAT``, per PBX ``CTI_PBX_<NAME>_HOST``/``_PORT``/``_USERNAME``/``_SECRET``, and
for the customer store ``DATABASE_URL`` and ``CTI_DEFAULT_REGION``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_URL = "sqlite+aiosqlite:///data/cti.sqlite3"  # the embedded store, ./data


DEMO_DATABASE_URL = "sqlite:///data/demo.sqlite3"  # `cti demo`'s own store, apart from serve's


class SettingsError(Exception):
    """The configuration file or environment is invalid (message says where)."""


@dataclass(frozen=True)
class PbxSettings:
    """One Asterisk to follow. ``name`` is carried by every call and event from it."""

    name: str = "default"
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "cti"
    secret: str = field(default="", repr=False)
    events: str = "on"
    # seconds without an event after which a call is ended as expired: its hang-ups never
    # came (a call silent this long is over or forgotten); bounds the calls kept in memory
    max_call_age: float = 4 * 3600.0
    ping_interval: float = 10.0
    pong_timeout: float = 5.0
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # seconds at least between two attempts after Asterisk refused the login: a wrong secret
    # is not fixed by hammering, and each refusal costs Asterisk a second of sleep
    refused_backoff: float = 30.0
    # seconds a link must stay up before the backoff starts again from backoff_initial: a peer
    # that accepts the login and drops at once is retried with growing delays, not in a storm
    stable_after: float = 30.0
    # where a blind transfer sends the caller (cti.call_control): a queue's name is an
    # extension in queue_context; an agent is dialled at its Local member's exten@context
    # (agent_context, if set, instead of that context); numbers only if number_context is set
    queue_context: str = "incoming"
    agent_context: str = ""
    number_context: str = ""


@dataclass(frozen=True)
class AgentSettings:
    """An agent account and the queue member names / interfaces that mean this agent."""

    id: str
    name: str = ""
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreSettings:
    """The customer store: where it lives, how national numbers are read, and how long the
    pop may wait for a lookup (seconds)."""

    database_url: str = field(default=DEFAULT_URL, repr=False)  # may hold a password
    default_region: str = "CN"
    lookup_budget: float = 0.3


@dataclass(frozen=True)
class WebSettings:
    """The agent page. Without an accounts file nobody can log in, so it is not started."""

    host: str = "127.0.0.1"
    port: int = 8080
    accounts_file: str = ""
    dispositions_file: str = "config/dispositions.toml"
    secure_cookies: bool = False


@dataclass(frozen=True)
class IvrSettings:
    """The FastAGI server of the IVR menus. Without ``menus_dir`` it is not started.

    FastAGI has no authentication of its own (docs/ivr.md, Security): only ``allowed_peers``
    may connect (IP addresses or CIDR networks; by default loopback and each ``[pbx.*]``
    host, a host name resolved when the server starts), with a ``secret`` every AGI URL must
    carry as ``?secret=...`` (better given as CTI_IVR_SECRET). A customer's PIN may be tried
    ``pin_failures`` times per ``pin_window`` seconds across calls, then not for
    ``pin_lockout`` seconds, doubled at each lockout in a row. Findings reach a card only for
    a call the AMI side follows, waited for up to ``call_wait`` seconds."""

    host: str = "127.0.0.1"
    port: int = 4573
    menus_dir: str = ""  # a folder of menu files (config/ivr): <name>.toml serves agi://…/<name>
    allowed_peers: tuple[str, ...] = ()  # () in the file: loopback and the [pbx.*] hosts
    secret: str = field(default="", repr=False)
    pin_failures: int = 5
    pin_window: float = 900.0
    pin_lockout: float = 60.0
    call_wait: float = 2.0


@dataclass(frozen=True)
class CrmSettings:
    """The external CRM. Outbound: the outbox's rows go to ``webhook_url`` (empty: they wait
    in the outbox until one is set), signed with ``secret``; retries back off from
    ``backoff_initial`` to ``backoff_max`` seconds, and a row is dead after ``max_attempts``
    failures (300 at the 5-minute cap: about a day). Inbound: the REST API answers a bearer
    ``inbound_token`` (empty: the inbound API is off)."""

    webhook_url: str = ""
    secret: str = field(default="", repr=False)
    inbound_token: str = field(default="", repr=False)
    timeout: float = 10.0  # seconds per delivery attempt
    max_attempts: int = 300
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    concurrency: int = 32  # requests in flight (never two changes of one customer)
    batch: int = 1  # changes per request: 1, or up to 500 as {"batch": [...]}


@dataclass(frozen=True)
class SegmentSettings:
    """Where the value/lifecycle/loyalty rules live (crm_sync.segments)."""

    rules_file: str = "config/segments.toml"


@dataclass(frozen=True)
class FollowupSettings:
    """Follow-ups as work: which missed calls become one, and how often the center may call
    a customer (at most ``contact_max`` calls placed to them per ``contact_window_hours``).
    A callback is an Originate of ``Local/<number>@<dial_context>`` ringing for at most
    ``ring_seconds`` (docs/follow-ups.md has the dialplan)."""

    from_abandoned: bool = True  # an identified caller who hung up in the queue
    from_missed: bool = True  # an identified caller nobody answered (ring-no-answer, timeout)
    due_minutes: float = 30.0  # how soon such a callback is due
    contact_max: int = 2
    contact_window_hours: float = 24.0
    dial_context: str = "callbacks"  # the dialplan context that dials a customer's number
    ring_seconds: float = 30.0  # how long the customer's phone rings before "no answer"


def _local_zone() -> tzinfo:
    """This machine's zone: "today" on the wallboard starts at the center's midnight."""
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


@dataclass(frozen=True, slots=True)
class QueueRules:
    """Per queue: the service-level threshold and the alert thresholds."""

    service_level: float | None = None  # seconds; None: Asterisk's servicelevel, else 20 s
    alert_longest_wait: float = 60.0  # seconds
    alert_service_level: float = 80.0  # percent, over the last 15 minutes
    alert_waiting: int | None = None  # callers waiting at once


@dataclass(frozen=True, slots=True)
class Weights:
    """How an agent's score weighs its four parts (any scale: they are normalised)."""

    availability: float = 0.1
    customer_rating: float = 0.2
    supervisor_rating: float = 0.3
    resolution: float = 0.4

    def as_dict(self) -> dict[str, float]:
        return {
            "availability": self.availability,
            "customer_rating": self.customer_rating,
            "supervisor_rating": self.supervisor_rating,
            "resolution": self.resolution,
        }


@dataclass(frozen=True)
class WrapupSettings:
    """The wrap-up hold (an outcome required): after ``max_seconds`` the agent is released
    though the outcome is still owed, so the service never pauses anyone for good."""

    max_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class BoardRules:
    short_abandon: float = 5.0  # seconds: a caller gone quicker is not a failure
    default: QueueRules = QueueRules()
    queues: Mapping[str, QueueRules] = field(default_factory=dict)
    weights: Weights = Weights()
    wrapup_grace: float = 5.0
    timezone: tzinfo = field(default_factory=_local_zone)

    def for_queue(self, name: str) -> QueueRules:
        return self.queues.get(name, self.default)


@dataclass(frozen=True)
class Settings:
    pbxs: tuple[PbxSettings, ...] = (PbxSettings(),)
    agents: tuple[AgentSettings, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line (cti.logs)
    store: StoreSettings = field(default_factory=StoreSettings)
    web: WebSettings = field(default_factory=WebSettings)
    ivr: IvrSettings = field(default_factory=IvrSettings)
    wallboard: BoardRules = field(default_factory=BoardRules)
    crm: CrmSettings = field(default_factory=CrmSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    followups: FollowupSettings = field(default_factory=FollowupSettings)
    wrapup: WrapupSettings = field(default_factory=WrapupSettings)


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings; ``path`` defaults to ``$CTI_CONFIG``. Raises SettingsError."""
    env = os.environ if env is None else env
    path = path or env.get("CTI_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config {path}: {exc}") from exc
    pbxs = tuple(_pbx(name, body, env) for name, body in raw.get("pbx", {}).items()) or (
        _pbx("default", {}, env),
    )
    agents = tuple(_agent(a) for a in raw.get("agents", []))
    return Settings(
        pbxs=pbxs,
        agents=agents,
        log_level=env.get("CTI_LOG_LEVEL", raw.get("log_level", "INFO")),
        log_format=_log_format(env.get("CTI_LOG_FORMAT", raw.get("log_format", "text"))),
        store=_store(raw.get("store", {}), env),
        web=_web(raw.get("web", {})),
        ivr=_ivr(raw.get("ivr", {}), env, pbxs),
        wallboard=_wallboard(raw.get("wallboard", {})),
        crm=_crm(raw.get("crm", {}), env),
        segments=_plain("segments", SegmentSettings(), raw.get("segments", {})),
        followups=_plain("followups", FollowupSettings(), raw.get("followups", {})),
        wrapup=_wrapup(raw.get("wrapup", {})),
    )


def _log_format(value: Any) -> str:
    if value not in ("text", "json"):
        raise SettingsError(f'log_format {value!r} is not "text" or "json"')
    return str(value)


_T = TypeVar("_T")


def _plain(section: str, default: _T, body: Mapping[str, Any]) -> _T:
    """A section of scalar keys: each value is read as the type of its default."""
    known = {f.name: getattr(default, f.name) for f in fields(default)}  # type: ignore[arg-type]
    unknown = set(body) - set(known)
    if unknown:
        raise SettingsError(f"[{section}]: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in body.items():
        kind = type(known[key])
        if kind is bool and not isinstance(value, bool):
            raise SettingsError(f"[{section}]: {key} must be true or false, not {value!r}")
        try:
            values[key] = kind(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"[{section}]: {key}: {exc}") from exc
        if kind in (int, float) and values[key] < 0:
            raise SettingsError(f"[{section}]: {key} must not be negative")
    return replace(default, **values)  # type: ignore[type-var]


def _wrapup(body: Mapping[str, Any]) -> WrapupSettings:
    wrapup = _plain("wrapup", WrapupSettings(), body)
    if wrapup.max_seconds <= 0:
        raise SettingsError("[wrapup]: max_seconds must be more than 0")
    return wrapup


def _crm(body: Mapping[str, Any], env: Mapping[str, str]) -> CrmSettings:
    """``[crm]``; the secrets are better given as CTI_CRM_SECRET / CTI_CRM_TOKEN."""
    values = dict(body)
    for key, name in (("secret", "CTI_CRM_SECRET"), ("inbound_token", "CTI_CRM_TOKEN")):
        if env.get(name):
            values[key] = env[name]
    crm = _plain("crm", CrmSettings(), values)
    if crm.webhook_url and not crm.webhook_url.startswith(("http://", "https://")):
        raise SettingsError(f"[crm]: webhook_url {crm.webhook_url!r} is not an http(s) URL")
    if crm.webhook_url and not crm.secret:
        raise SettingsError("[crm]: a webhook_url needs a secret (or CTI_CRM_SECRET) to sign with")
    if min(crm.max_attempts, crm.concurrency, crm.batch) < 1 or crm.timeout <= 0:
        raise SettingsError("[crm]: max_attempts, concurrency, batch must be ≥ 1, timeout > 0")
    if crm.batch > 500:
        raise SettingsError(f"[crm]: batch {crm.batch} is over 500 changes per request")
    return crm


def _web(body: Mapping[str, Any]) -> WebSettings:
    unknown = set(body) - {f.name for f in fields(WebSettings)}
    if unknown:
        raise SettingsError(f"[web]: unknown keys {sorted(unknown)}")
    try:
        web = replace(WebSettings(), **body)
        return replace(web, port=int(web.port), secure_cookies=bool(web.secure_cookies))
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[web]: {exc}") from exc


IVR_LOOPBACK = ("127.0.0.0/8", "::1")
_URL_SPECIAL = frozenset("&#?%+/= \t\r\n")  # what a query value would need escaped


def _ivr(
    body: Mapping[str, Any], env: Mapping[str, str], pbxs: tuple[PbxSettings, ...]
) -> IvrSettings:
    """``[ivr]``; without ``allowed_peers``, loopback and the PBXs' hosts may connect."""
    values = dict(body)
    peers = values.pop("allowed_peers", None)
    if env.get("CTI_IVR_SECRET"):
        values["secret"] = env["CTI_IVR_SECRET"]
    ivr = _plain("ivr", IvrSettings(), values)
    if ivr.secret and (not ivr.secret.isascii() or any(c in ivr.secret for c in _URL_SPECIAL)):
        raise SettingsError(
            "[ivr]: secret must be ASCII, without spaces nor & # ? % + / = (it goes in a URL)"
        )
    if ivr.pin_failures < 1 or min(ivr.pin_window, ivr.pin_lockout) <= 0:
        raise SettingsError("[ivr]: pin_failures must be ≥ 1, pin_window and pin_lockout > 0")
    if peers is None:
        hosts = tuple(dict.fromkeys([*IVR_LOOPBACK, *(pbx.host for pbx in pbxs)]))
        return replace(ivr, allowed_peers=hosts)
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise SettingsError(f"[ivr]: allowed_peers must be a list of addresses, not {peers!r}")
    if not peers:
        raise SettingsError(
            "[ivr]: allowed_peers is empty, so no PBX could connect "
            "(leave it out for loopback and the [pbx.*] hosts)"
        )
    for peer in peers:
        try:
            ipaddress.ip_network(peer.strip(), strict=True)
        except ValueError as exc:
            raise SettingsError(
                f"[ivr]: allowed_peers {peer!r} is not an IP address or CIDR network ({exc})"
            ) from None
    return replace(ivr, allowed_peers=tuple(p.strip() for p in peers))


def _wallboard(body: Mapping[str, Any]) -> BoardRules:
    """``[wallboard]``: short_abandon, wrapup_grace, timezone, ``[wallboard.weights]`` and
    ``[wallboard.queues.<name>]`` (``default`` for every queue not named)."""
    unknown = set(body) - {"short_abandon", "wrapup_grace", "timezone", "weights", "queues"}
    if unknown:
        raise SettingsError(f"[wallboard]: unknown keys {sorted(unknown)}")
    try:
        zone = ZoneInfo(body["timezone"]) if "timezone" in body else _local_zone()
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise SettingsError(f"[wallboard]: timezone {body['timezone']!r} unknown") from exc
    queues = {str(n): _queue_rules(str(n), q) for n, q in dict(body.get("queues", {})).items()}
    try:
        weights = Weights(**{k: float(v) for k, v in dict(body.get("weights", {})).items()})
        rules = BoardRules(
            short_abandon=float(body.get("short_abandon", 5.0)),
            default=queues.pop("default", QueueRules()),
            queues=queues,
            weights=weights,
            wrapup_grace=float(body.get("wrapup_grace", 5.0)),
            timezone=zone,
        )
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[wallboard]: {exc}") from exc
    if min(weights.as_dict().values()) < 0 or rules.short_abandon < 0:
        raise SettingsError("[wallboard]: weights and short_abandon must not be negative")
    return rules


def _queue_rules(name: str, body: Mapping[str, Any]) -> QueueRules:
    try:
        values = {k: (None if v is None else float(v)) for k, v in dict(body).items()}
        if values.get("alert_waiting") is not None:
            values["alert_waiting"] = int(values["alert_waiting"])  # type: ignore[arg-type]
        return QueueRules(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[wallboard.queues.{name}]: {exc}") from exc


def _pbx(name: str, body: Mapping[str, Any], env: Mapping[str, str]) -> PbxSettings:
    known = {f.name: f.type for f in fields(PbxSettings)}
    unknown = set(body) - set(known)
    if unknown:
        raise SettingsError(f"[pbx.{name}]: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = dict(body)
    prefix = f"CTI_PBX_{name.upper()}_"
    for key in ("host", "port", "username", "secret"):
        if prefix + key.upper() in env:
            values[key] = env[prefix + key.upper()]
    try:
        pbx = replace(PbxSettings(name=name), **values)
        return replace(
            pbx,
            port=int(pbx.port),
            ping_interval=float(pbx.ping_interval),
            pong_timeout=float(pbx.pong_timeout),
            max_call_age=_positive(pbx.max_call_age, "max_call_age"),
        )
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[pbx.{name}]: {exc}") from exc


def _positive(value: Any, key: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{key} must be positive, not {value}")
    return number


def _agent(body: Mapping[str, Any]) -> AgentSettings:
    if "id" not in body:
        raise SettingsError(f"[[agents]] entry without id: {dict(body)}")
    return AgentSettings(
        id=str(body["id"]), name=str(body.get("name", "")), members=tuple(body.get("members", ()))
    )


def _store(body: Mapping[str, Any], env: Mapping[str, str]) -> StoreSettings:
    known = {f.name for f in fields(StoreSettings)}
    unknown = set(body) - known
    if unknown:
        raise SettingsError(f"[store]: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = dict(body)
    for key, name in (("database_url", "DATABASE_URL"), ("default_region", "CTI_DEFAULT_REGION")):
        if env.get(name):
            values[key] = env[name]
    try:
        store = replace(StoreSettings(), **values)
        budget = float(store.lookup_budget)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[store]: {exc}") from exc
    region = str(store.default_region).strip().upper()
    if len(region) != 2 or not region.isascii() or not region.isalpha():
        raise SettingsError(f"[store]: default_region {region!r} is not a country code like CN")
    if budget <= 0:
        raise SettingsError(f"[store]: lookup_budget must be positive, not {budget}")
    return replace(
        store, database_url=str(store.database_url), default_region=region, lookup_budget=budget
    )
