"""``GET /api/openapi.json``: the OpenAPI 3.1 document of the JSON API, served as shipped.

The document is a data file of the package (``screenpop/openapi.json``), not built from the
routes: tests/screenpop/test_openapi.py holds the two together (a route without its
description, or a description without its route, fails), and tests/screenpop/test_api_fuzz.py
checks the app's answers against it. Like every other ``/api/`` route it needs a session: it
tells nothing the prose of docs/api.md does not, but nothing here is for strangers.
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

DOCUMENT = web.AppKey("openapi_document", bytes)


def document() -> bytes:
    """The shipped document, as bytes (read once per app)."""
    return files("screenpop").joinpath("openapi.json").read_bytes()


def add_routes(app: web.Application) -> None:
    app[DOCUMENT] = document()
    app.router.add_get("/api/openapi.json", openapi_json, name="api_openapi")


async def openapi_json(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[DOCUMENT], content_type="application/json")
