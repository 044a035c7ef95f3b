"""A refused request, audited and bounded: how every door of the API says no to a login.

Each refusal is an audit row (:func:`crm_sync.audit.record_denied`: identical ones fold into
one row, counted); once the login was refused too often of late the answer is 429 with
``Retry-After``, so a script probing for what it may do is slowed, and its rows cannot flood
the log. A refusal whose audit row could not be written is logged and still refused.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync import audit
from screenpop.errors import ApiError
from screenpop.keys import CLOCK, SESSION, STORE

log = logging.getLogger(__name__)


async def refuse(
    request: web.Request,
    *,
    error_id: str,
    message: str,
    action: str,
    result: str,
    tried: str = "attempts",
    agent: str = "",
    queue: str | None = None,
    pbx: str | None = None,
    detail: str = "",
) -> NoReturn:
    """Audit the refusal (``result`` after ``denied: ``) and raise 403 ``error_id``; 429
    once the login was refused too often of late (``tried``: what the 429 says it counted)."""
    account = request[SESSION].account
    store = request.app[STORE]
    if store is not None:
        try:
            denied = await audit.record_denied(
                store.sessions,
                at=request.app[CLOCK](),
                login=account.login,
                role=account.role,
                action=action,
                agent=agent,
                queue=queue,
                pbx=pbx,
                detail=detail,
                result=f"denied: {result}",
            )
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "audit entry not written: %s refused %s %s: %s", account.login, action, detail, exc
            )
        else:
            if denied.limited:
                seconds = int(audit.DENIED_WINDOW.total_seconds())
                raise ApiError(
                    429,
                    "too_many_attempts",
                    f"{message} Too many refused {tried}: wait {seconds} s.",
                    retry_after=seconds,
                )
    raise ApiError(403, error_id, message)
