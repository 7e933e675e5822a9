"""One envelope for every 4xx and 5xx, with X-Request-ID and the security headers, and a
500 that leaks nothing while the log keeps the traceback."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from slipway.app import create_app
from slipway.platform.errors import ConflictError, NotFoundError
from slipway.platform.logging import configure_logging
from slipway.platform.settings import Settings

MAX_BODY = 2048
LEAKY_TEXT = "SENSITIVE-internal-detail-42"
LOCAL_SECRET = "local-variable-secret-value"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-xss-protection": "0",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.fixture
def backend() -> str:
    """The envelope does not depend on the database; one backend keeps these tests fast."""
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_size": MAX_BODY}


class ItemCreate(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    password: str


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    application = create_app(settings)

    @application.post("/_test/items", status_code=201)
    async def create_item(item: ItemCreate) -> dict[str, Any]:
        return {"name": item.name, "quantity": item.quantity}

    @application.get("/_test/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        raise NotFoundError(f"Item {item_id} does not exist.")

    @application.get("/_test/boom")
    async def boom() -> None:
        password = LOCAL_SECRET  # a local the traceback must not carry into the log
        raise RuntimeError(LEAKY_TEXT + password[:0])

    @application.get("/_test/conflict")
    async def conflict() -> None:
        raise ConflictError("The SKU is taken.", details={"field": "sku"})

    @application.get("/_test/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "Short and stout.")

    return application


@pytest.fixture
def log_stream(app: FastAPI) -> io.StringIO:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    return stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope, tied to its X-Request-ID, with every header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert "strict-transport-security" not in response.headers
    return error


async def chunks(total: int, size: int = 512) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


VALID_ITEM = {"name": "bolt", "quantity": 3, "password": "pw"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/no/such/route", {}, 404, "not_found"),
        ("DELETE", "/health/live", {}, 405, "method_not_allowed"),
        (
            "POST",
            "/_test/items",
            {"content": b"{" + b" " * MAX_BODY + b"}"},
            413,
            "payload_too_large",
        ),
        ("POST", "/_test/items", {"json": {"name": "", "quantity": 0}}, 422, "validation_error"),
        ("GET", "/_test/items/not-a-number", {}, 422, "validation_error"),
        ("GET", "/_test/items/5", {}, 404, "not_found"),
        ("GET", "/_test/conflict", {}, 409, "conflict"),
        ("GET", "/_test/teapot", {}, 418, "http_error"),
        ("GET", "/_test/boom", {}, 500, "internal_error"),
    ],
    ids=["404", "405", "413", "422-body", "422-path", "404-app", "409", "418", "500"],
)
async def test_every_error_uses_the_envelope(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await client.request(method, path, **kwargs)

    assert_envelope(response, status, code)


async def test_success_carries_request_id_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/_test/items", json=VALID_ITEM)

    assert response.status_code == 201
    assert response.headers["x-request-id"]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


async def test_incoming_request_id_lands_in_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": "client-abc-123"})

    assert assert_envelope(response, 404, "not_found")["request_id"] == "client-abc-123"


async def test_405_lists_allowed_methods(client: httpx.AsyncClient) -> None:
    response = await client.post("/health/live")

    assert_envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_413_by_content_length_does_not_reach_the_route(client: httpx.AsyncClient) -> None:
    response = await client.post("/_test/items", content=b"x" * (MAX_BODY + 1))

    error = assert_envelope(response, 413, "payload_too_large")
    assert str(MAX_BODY) in error["message"]


async def test_413_for_chunked_body_without_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/items",
        content=chunks(MAX_BODY * 4),
        headers={"Content-Type": "application/json"},
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_envelope(response, 413, "payload_too_large")


async def test_chunked_body_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    payload = orjson.dumps(VALID_ITEM)

    async def body() -> AsyncIterator[bytes]:
        for index in range(0, len(payload), 7):
            yield payload[index : index + 7]

    response = await client.post(
        "/_test/items", content=body(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201
    assert response.json() == {"name": "bolt", "quantity": 3}


async def test_422_lists_field_paths_and_reasons_without_echoing_input(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/_test/items", json={"name": "", "quantity": -1, "password": ["hunter2-SECRET"]}
    )

    error = assert_envelope(response, 422, "validation_error")
    fields = {detail["field"]: detail for detail in error["details"]}
    assert set(fields) == {"body.name", "body.quantity", "body.password"}
    assert fields["body.quantity"]["loc"] == ["body", "quantity"]
    assert "greater than 0" in fields["body.quantity"]["message"]
    assert fields["body.name"]["type"] == "string_too_short"
    assert "hunter2-SECRET" not in response.text


async def test_malformed_json_is_a_422_envelope(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/items", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )

    assert_envelope(response, 422, "validation_error")


async def test_app_error_details_are_returned(client: httpx.AsyncClient) -> None:
    response = await client.get("/_test/conflict")

    error = assert_envelope(response, 409, "conflict")
    assert error["message"] == "The SKU is taken."
    assert error["details"] == {"field": "sku"}


async def test_500_leaks_nothing_and_logs_the_traceback(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.get("/_test/boom", headers={"X-Request-ID": "req-500-000001"})

    error = assert_envelope(response, 500, "internal_error")
    assert error["details"] is None
    for leak in (LEAKY_TEXT, "RuntimeError", "Traceback", "boom", ".py"):
        assert leak not in response.text

    lines = records(log_stream)
    (failure,) = [line for line in lines if line["event"] == "unhandled_exception"]
    assert failure["request_id"] == "req-500-000001"
    assert failure["level"] == "error"
    logged = orjson.dumps(failure["exception"]).decode()
    assert "RuntimeError" in logged
    assert LEAKY_TEXT in logged
    assert "test_errors.py" in logged  # the frames, not only the message
    assert LOCAL_SECRET not in log_stream.getvalue()  # but never the frames' local variables
    (access,) = [line for line in lines if line["event"] == "request"]
    assert (access["status"], access["route"]) == (500, "/_test/boom")
    assert access["request_id"] == "req-500-000001"


async def test_app_survives_a_500(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_test/boom")).status_code == 500
    assert (await client.get("/health/live")).status_code == 200
