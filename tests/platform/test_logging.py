"""Logging: one JSON object per line under LOG_FORMAT=json, for our loggers and the stdlib
ones (uvicorn, alembic, ...), request_id on request lines, secrets redacted."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog

from slipway.platform.logging import configure_logging
from tests.integration.conftest import slipway_env, start_server

# Kept away from the code below: console tracebacks show the source lines around a frame.
DB_PASSWORD = "db-password-123"
DATABASE_URL_WITH_PASSWORD = f"postgresql://app:{DB_PASSWORD}@db/app"


@pytest.fixture
def json_stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    return stream


def parse_lines(text: str) -> list[dict[str, Any]]:
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"log line is not JSON: {line!r}")
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


def test_structlog_and_stdlib_lines_are_json(json_stream: io.StringIO) -> None:
    structlog.get_logger("slipway.test").info("order_placed", order_id=7)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 123)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade  -> abc")
    logging.getLogger("sqlalchemy.pool").warning("pool is %s", "full")

    lines = parse_lines(json_stream.getvalue())

    assert [line["event"] for line in lines] == [
        "order_placed",
        "Started server process [123]",
        "Running upgrade  -> abc",
        "pool is full",
    ]
    assert lines[0]["order_id"] == 7
    assert lines[1]["logger"] == "uvicorn.error"
    assert all({"level", "timestamp", "logger"} <= set(line) for line in lines)


def test_uvicorn_colour_duplicate_is_dropped(json_stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://x", extra={"color_message": "\x1b[1mcoloured\x1b[0m"}
    )

    (line,) = parse_lines(json_stream.getvalue())
    assert "color_message" not in line
    assert "\x1b" not in json_stream.getvalue()


def test_uvicorn_access_log_is_silenced(json_stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')

    assert json_stream.getvalue() == ""


def test_exceptions_render_as_json(json_stream: io.StringIO) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        structlog.get_logger("slipway.test").exception("failed")
        logging.getLogger("some.library").exception("library failed")

    first, second = parse_lines(json_stream.getvalue())
    for line in (first, second):
        assert line["level"] == "error"
        assert "ValueError" in orjson.dumps(line["exception"]).decode()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_show_local_variables(fmt: Any) -> None:
    stream = io.StringIO()
    configure_logging("INFO", fmt, stream=stream)
    database_url = DATABASE_URL_WITH_PASSWORD

    try:
        raise ConnectionError("cannot reach " + database_url.split("@")[1])
    except ConnectionError:
        structlog.get_logger("slipway.test").exception("connect_failed")

    output = stream.getvalue()
    assert "ConnectionError" in output
    assert "cannot reach db/app" in output
    assert DB_PASSWORD not in output


def test_secrets_are_redacted(json_stream: io.StringIO) -> None:
    structlog.get_logger("slipway.test").info(
        "login", password="hunter2", token="tok-123", authorization="Bearer x", user="ann"
    )

    (line,) = parse_lines(json_stream.getvalue())
    assert line["password"] == "[redacted]"
    assert line["token"] == "[redacted]"
    assert line["authorization"] == "[redacted]"
    assert line["user"] == "ann"
    assert "hunter2" not in json_stream.getvalue()


def test_console_format_is_human_readable() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream)

    structlog.get_logger("slipway.test").info("order_placed", order_id=7)

    output = stream.getvalue()
    assert "order_placed" in output
    assert "order_id=7" in output
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(output)


def test_log_level_filters(json_stream: io.StringIO) -> None:
    configure_logging("WARNING", "json", stream=json_stream)

    structlog.get_logger("slipway.test").info("hidden")
    logging.getLogger("some.library").info("hidden too")
    structlog.get_logger("slipway.test").warning("shown")

    assert [line["event"] for line in parse_lines(json_stream.getvalue())] == ["shown"]


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_of_a_real_server_is_json(tmp_path: Path, workers: int) -> None:
    env = slipway_env(LOG_FORMAT="json", WORKERS=str(workers))
    server = start_server(tmp_path, env)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            ok = http.get("/info", headers={"User-Agent": "log-test"})
            missing = http.get("/no/such/page", headers={"X-Request-ID": "log-test-404-0001"})
            wrong_method = http.delete("/info")
            ready = http.get("/health/ready")
            http.get("/health/live")
        assert (ok.status_code, missing.status_code, wrong_method.status_code) == (200, 404, 405)
        assert ready.status_code == 200
        server.assert_graceful_stop()
    finally:
        server.process.close()

    lines = parse_lines(server.process.log_text())
    events = [line.get("event") for line in lines]
    requests = [line for line in lines if line.get("event") == "request"]

    # Migrations, uvicorn start-up and shutdown and our own lines: all JSON.
    assert "migrate_done" in events
    assert any("Application startup complete" in str(e) for e in events)
    assert any("Finished server process" in str(e) for e in events)
    assert [(r["route"], r["status"]) for r in requests] == [
        ("/info", 200),
        ("<unmatched>", 404),
        ("/info", 405),
    ]  # 200 health probes stay out of the log
    for request in requests:
        assert {"request_id", "route", "status", "duration_ms", "method", "client_ip"} <= set(
            request
        )
        assert request["client_ip"] == "127.0.0.1"
    assert requests[0]["request_id"] == ok.headers["x-request-id"]
    assert requests[0]["user_agent"] == "log-test"
    assert requests[1]["request_id"] == "log-test-404-0001"
    assert requests[2]["request_id"] == wrong_method.headers["x-request-id"]
