"""The AppKeys and RequestKeys the screen-pop modules share. A key for an object of one
module's own (the wallboard's view, the follow-up desk) lives in that module, so this one
imports none of the modules that import it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from crm_sync.store import CustomerStore
from cti.call_control import CallControls
from cti.controls import MemberControls
from screenpop.auth import Accounts, LoginLimiter, Session, SessionStore
from screenpop.dispositions import Dispositions
from screenpop.pipeline import PopService

POP = web.AppKey("pop", PopService)
ACCOUNTS = web.AppKey("accounts", Accounts)
DISPOSITIONS = web.AppKey("dispositions", Dispositions)
STORE = web.AppKey[CustomerStore | None]("store")
CLOCK = web.AppKey[Callable[[], datetime]]("clock")
SESSIONS = web.AppKey("sessions", SessionStore)
LOGIN_LIMITER = web.AppKey("login_limiter", LoginLimiter)
SECURE_COOKIES = web.AppKey("secure_cookies", bool)
PING_INTERVAL = web.AppKey("ping_interval", float)
CONTROLS = web.AppKey[MemberControls | None]("controls")  # None: no PBX to control
CALL_CONTROLS = web.AppKey[CallControls | None]("call_controls")  # None: no PBX to control
# tells the wallboard's store refresher that a rating changed a figure (no-op without one)
WORK_CHANGED = web.AppKey[Callable[[], None]]("work_changed")
# changes at every start: a browser holding sequence numbers of an earlier run gets a snapshot
EPOCH = web.AppKey("epoch", str)
# the external CRM's bearer token for /api/crm/… (empty: that API is off)
CRM_TOKEN = web.AppKey("crm_token", str)

SESSION = web.RequestKey("session", Session)
# who may own a follow-up, value -> what the agent reads ("Bob", "queue support"): the outcome
# form offers these and the API takes nothing else, so a typo never hides a follow-up
FOLLOWUP_OWNERS = web.AppKey[Callable[[], dict[str, str]]]("followup_owners")
# the queues an agent is in (their queues' follow-ups are theirs too; empty without a desk)
AGENT_QUEUES = web.AppKey[Callable[[str], frozenset[str]]]("agent_queues")
