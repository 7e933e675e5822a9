"""Request bodies the app refuses, seen from a client: content codings (415), JSON it cannot
decode (422), oversized bodies (413, and when the connection is kept to drain them).
The same cases against real servers, with memory watched: tests/reliability."""

from __future__ import annotations

import gzip

import httpx
import pytest

from slipway.platform.middleware.body_limit import LINGER_FACTOR

ECHO = "/_test/echo"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def backend() -> str:
    """Nothing here reaches the database."""
    return "sqlite"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "identity, gzip", "GZIP"])
async def test_encoded_bodies_are_refused_with_415(client: httpx.AsyncClient, coding: str) -> None:
    response = await client.post(
        ECHO, content=gzip.compress(b'{"a": 1}'), headers={**JSON, "Content-Encoding": coding}
    )

    assert response.status_code == 415
    assert response.headers["accept-encoding"] == "identity"
    # Kept open: the server discards the unread body instead of resetting the connection.
    assert "connection" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["details"] == {"accepted_encodings": ["identity"]}
    assert error["request_id"] == response.headers["x-request-id"]


async def test_identity_coding_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        ECHO, content=b'{"a": 1}', headers={**JSON, "Content-Encoding": "identity"}
    )

    assert response.status_code == 200
    assert response.json()["echo"] == {"a": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "JSON nesting is too deep."),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "JSON nesting is too deep."),
        (b'{"a": "\xff\xfe"}', "The body is not valid JSON."),
        (b'{"a": ' + b"9" * 5_000 + b"}", "The body is not valid JSON."),
    ],
    ids=["nested arrays", "nested objects", "not utf-8", "5000-digit integer"],
)
async def test_undecodable_json_is_a_422_like_any_invalid_json(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    response = await client.post(ECHO, content=body, headers=JSON)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"] == [
        {"field": "body", "loc": ["body"], "message": message, "type": "json_invalid"}
    ]


async def test_an_oversized_body_is_refused_and_the_connection_kept_to_drain_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(ECHO, content=b" " * (2 * 1_048_576), headers=JSON)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "connection" not in response.headers


async def test_a_body_declared_far_beyond_the_limit_is_cut_off(client: httpx.AsyncClient) -> None:
    declared = 1_048_576 * LINGER_FACTOR + 1
    response = await client.post(
        ECHO, content=b"{}", headers={**JSON, "Content-Length": str(declared)}
    )

    assert response.status_code == 413
    assert response.headers["connection"] == "close"
