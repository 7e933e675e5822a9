"""OWASP API7:2023 Server Side Request Forgery.

The app fetches no URL a client supplies, with one guarded exception: webhook endpoints,
which staff register and the app calls. The schema walk below finds every request field
that is, or is named like, a URL or host; anything not on the guarded list fails the test,
so a new URL-taking endpoint must come with its guard. The guard itself is proven through
the API: internal, loopback, link-local and metadata addresses are refused.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import AnyUrl, BaseModel

from tests.owasp.conftest import new_staff, operations

URL_FORMATS = {"uri", "url", "iri", "uri-reference", "iri-reference", "uri-template", "hostname"}
_URL_NAME = re.compile(
    r"^(url|uri|href|link|callback|webhook|redirect|redirect_uri|return_to|next|host|hostname"
    r"|domain|feed|target)$|_(url|uri|href|host)$",
    re.IGNORECASE,
)
#: (method, path, field) that take a URL the app will call, and the module guarding them.
GUARDED: dict[tuple[str, str, str], str] = {
    ("POST", "/api/v1/webhooks", "url"): "slipway.webhooks.ssrf",
    ("PATCH", "/api/v1/webhooks/{endpoint_id}", "url"): "slipway.webhooks.ssrf",
}


def _resolve(schema: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _fields(schema: dict[str, Any], node: Any, name: str, seen: set[int]) -> list[tuple[str, Any]]:
    """(field name, field schema) for a schema and every property, item and variant in it."""
    node = _resolve(schema, node)
    if not isinstance(node, dict) or id(node) in seen:
        return []
    seen.add(id(node))
    found = [(name, node)]
    for prop, sub in node.get("properties", {}).items():
        found += _fields(schema, sub, prop, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _fields(schema, node[key], name, seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, []):
            found += _fields(schema, sub, name, seen)
    return found


def url_inputs(app: FastAPI) -> set[tuple[str, str, str]]:
    """Every (method, path, field) of a request that looks like a URL or a host."""
    schema = app.openapi()
    hits: set[tuple[str, str, str]] = set()
    for method, path, operation in operations(app):
        inputs: list[tuple[str, Any]] = []
        for parameter in operation.get("parameters", []):
            inputs += _fields(schema, parameter.get("schema", {}), parameter["name"], set())
        for media in operation.get("requestBody", {}).get("content", {}).values():
            inputs += _fields(schema, media.get("schema", {}), "", set())
        for name, field in inputs:
            if (name and _URL_NAME.search(name)) or field.get("format") in URL_FORMATS:
                hits.add((method, path, name))
    return hits


def test_no_request_field_takes_a_url_except_the_guarded_ones(app: FastAPI) -> None:
    found = url_inputs(app)

    assert found <= set(GUARDED), f"unguarded URL inputs: {sorted(found - set(GUARDED))}"
    # The exceptions are still real: a guard nobody needs any more is removed from the list.
    assert set(GUARDED) <= found


class _Avatar(BaseModel):
    source: AnyUrl


class _Profile(BaseModel):
    avatars: list[_Avatar]
    callback_url: str


_detector_probe = FastAPI()


@_detector_probe.post("/profile")
async def _profile(body: _Profile) -> None:
    """A URL-taking operation for the detector test."""


def test_the_walk_finds_url_fields() -> None:
    """The detector itself: URL-shaped fields anywhere in a request body are found."""
    assert url_inputs(_detector_probe) == {
        ("POST", "/profile", "source"),
        ("POST", "/profile", "callback_url"),
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/internal",
        "http://192.168.1.1/admin",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
    ],
)
async def test_the_webhook_guard_refuses_internal_targets(
    client: httpx.AsyncClient, app: FastAPI, url: str
) -> None:
    staff = await new_staff(client, app)

    response = await client.post(
        "/api/v1/webhooks",
        json={"url": url, "event_types": ["order.created"]},
        headers=staff.headers,
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("webhook_url_blocked", "validation_error")
