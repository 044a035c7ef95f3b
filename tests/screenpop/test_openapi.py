"""The OpenAPI document (screenpop/openapi.json) stays true to the app: it is valid OpenAPI 3.1,
every ``/api/`` route the app registers is in it with its method, and nothing in it is missing
from the app. A route added without its description fails here (issue 22)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from screenpop import openapi
from tests.support.screenpop import build_app, client_for, login, new_pop

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, canonical path) of every JSON route under /api/ (HEAD is aiohttp's own)."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


@pytest.fixture
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(openapi.document())
    return loaded


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema


def test_a_broken_document_is_caught(doc: dict[str, Any]) -> None:
    """The validation above can fail: a response without its description is refused."""
    del doc["paths"]["/api/me"]["get"]["responses"]["200"]["description"]
    with pytest.raises(Exception, match="description"):
        schemathesis.openapi.from_dict(doc).validate()


def test_every_api_route_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    app = build_app(new_pop(None), None)
    registered = app_routes(app)
    assert len(registered) > 25  # the walk found the API (canonical paths, not just a few)
    assert registered - documented(doc) == set(), "routes of the app missing in openapi.json"
    assert documented(doc) - registered == set(), "routes in openapi.json the app does not have"


def test_an_undocumented_route_fails_the_comparison(doc: dict[str, Any]) -> None:
    app = build_app(new_pop(None), None)

    async def handler(request: web.Request) -> web.Response:
        raise AssertionError("never called")

    app.router.add_post("/api/things/{thing_id}", handler)
    assert app_routes(app) - documented(doc) == {("POST", "/api/things/{thing_id}")}


def test_every_operation_says_how_to_authenticate(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    for method, path in documented(doc):
        security = doc["paths"][path][method.lower()]["security"]
        expected = (
            [{"crmToken": []}]
            if path.startswith("/api/crm/")
            else [{"session": []}]
            if method == "GET"
            else [{"session": [], "csrf": []}]
        )
        assert security == expected, f"{method} {path}"
        assert all(name in schemes for option in security for name in option)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with client_for(build_app(new_pop(None), None)) as client:
        yield client


async def test_the_document_is_served_to_a_session(
    client: TestClient[web.Request, web.Application],
) -> None:
    refused = await client.get("/api/openapi.json")
    assert refused.status == 401
    assert (await refused.json())["error_id"] == "unauthenticated"
    await login(client, "alice")
    served = await client.get("/api/openapi.json")
    assert served.status == 200
    assert served.content_type == "application/json"
    assert await served.read() == openapi.document()
