"""Errors as responses: one middleware, a stable ``error_id`` for every failure.

Handlers raise :class:`ApiError` (or let aiohttp raise its HTTP errors, or let the database
fail); the middleware answers JSON for the API and the WebSocket, an HTML page otherwise.
Text the store refuses (crm_sync.text.FieldError, raised by its write paths whichever handler
called them) is ``422 invalid_field`` naming the field.
Nothing unexpected leaks: an unhandled exception is logged with its traceback and answered
``500 internal`` with no detail.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.text import FieldError

log = logging.getLogger(__name__)

_HTTP_IDS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


class ApiError(Exception):
    """A failure the client should see: HTTP status, stable id, human message."""

    def __init__(self, status: int, error_id: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error_id": self.error_id, "message": self.message, **self.extra}


def wants_json(request: web.Request) -> bool:
    """API and WebSocket clients get JSON errors; browsers asking for pages get HTML."""
    if request.path.startswith("/api/") or request.path == "/ws":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return render_error(request, exc)
    except FieldError as exc:
        return render_error(request, ApiError(422, "invalid_field", str(exc), field=exc.field))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        error_id = _HTTP_IDS.get(exc.status, f"http_{exc.status}")
        return render_error(request, ApiError(exc.status, error_id, exc.reason))
    except SQLAlchemyError as exc:
        log.warning("database failure on %s %s: %s", request.method, request.path, exc)
        return render_error(request, store_unavailable())
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render_error(request, ApiError(500, "internal", "Something went wrong."))


def store_unavailable() -> ApiError:
    return ApiError(503, "store_unavailable", "The customer store is unavailable; try again.")


def render_error(request: web.Request, error: ApiError) -> web.Response:
    headers = (
        {"Retry-After": str(error.extra["retry_after"])} if "retry_after" in error.extra else None
    )
    if wants_json(request):
        return web.json_response(error.to_json(), status=error.status, headers=headers)
    response = aiohttp_jinja2.render_template(
        "error.html", request, {"error": error}, status=error.status
    )
    if headers:
        response.headers.update(headers)
    return response
