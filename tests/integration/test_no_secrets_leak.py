"""No secret reaches the logs, /metrics or Sentry.

A real `slipway serve` (JSON logs, Sentry on, pointed at a stand-in ingest) gets the traffic
that carries secrets: failed and successful logins with passwords, Authorization headers
with real and forged bearer tokens, refresh tokens in bodies (rotated, reused, forged),
orders with Idempotency-Keys, and a forced 500 carrying all of them. Then every log line,
the /metrics body and every envelope sent to Sentry are searched for each value.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.conftest import SlipwayServer, run_slipway, slipway_env, start_server
from tests.platform.test_observability import SentryIngest
from tests.support.ports import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_EMAIL = "admin@example.com"


@pytest.fixture
def sentry_ingest() -> Iterator[SentryIngest]:
    ingest = SentryIngest()
    yield ingest
    ingest.close()


@pytest.fixture
def admin_password() -> str:
    return "Admin-pw-" + uuid.uuid4().hex


@pytest.fixture
def server(
    tmp_path: Path, sentry_ingest: SentryIngest, admin_password: str
) -> Iterator[SlipwayServer]:
    env = slipway_env(
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'secrets.db'}",
        SENTRY_DSN=sentry_ingest.dsn,
        SENTRY_TRACES_SAMPLE_RATE="1.0",
        RATE_LIMIT_POLICIES='{"login": "100/minute", "orders": "100/minute"}',
        REFRESH_COOKIE_SECURE="false",
    )
    migrate = run_slipway(["migrate"], cwd=tmp_path, env=env)
    assert migrate.returncode == 0, migrate.stderr
    created = run_slipway(
        ["users", "create-admin", "--email", ADMIN_EMAIL],
        cwd=tmp_path,
        env={**env, "SLIPWAY_ADMIN_PASSWORD": admin_password},
    )
    assert created.returncode == 0, created.stderr
    running = start_server(tmp_path, env)
    yield running
    running.process.close()


def test_secrets_never_reach_logs_metrics_or_sentry(
    server: SlipwayServer, sentry_ingest: SentryIngest, admin_password: str
) -> None:
    secrets: dict[str, str] = {"admin password": admin_password}
    http = httpx.Client(base_url=server.base_url, timeout=15)

    def login(password: str, username: str = ADMIN_EMAIL) -> httpx.Response:
        return http.post("/api/v1/auth/login", data={"username": username, "password": password})

    # Failed logins: a wrong password for a real account, any password for a missing one.
    for attempt in range(3):
        wrong = secrets[f"wrong password {attempt}"] = f"Wrong-pw-{attempt}-{uuid.uuid4().hex}"
        assert login(wrong).status_code == 401
    unknown = secrets["unknown user's password"] = "Nobody-pw-" + uuid.uuid4().hex
    assert login(unknown, username="nobody@example.com").status_code == 401

    # A real session: its tokens are secrets too.
    tokens = login(admin_password)
    assert tokens.status_code == 200, tokens.text
    pair = tokens.json()
    secrets["access token"] = pair["access_token"]
    secrets["refresh token"] = pair["refresh_token"]
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    assert http.get("/api/v1/users/me", headers=bearer).status_code == 200

    forged_bearer = secrets["forged bearer"] = "forged-" + uuid.uuid4().hex
    forged = http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged_bearer}"})
    assert forged.status_code == 401

    # Refresh tokens in bodies: rotated once, then the spent one replayed, then a forged one.
    rotated = http.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    secrets["rotated access token"] = rotated.json()["access_token"]
    secrets["rotated refresh token"] = rotated.json()["refresh_token"]
    replayed = http.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert replayed.status_code == 401
    forged_refresh = secrets["forged refresh token"] = "rt-" + uuid.uuid4().hex
    assert (
        http.post("/api/v1/auth/refresh", json={"refresh_token": forged_refresh}).status_code == 401
    )

    # Orders with Idempotency-Keys (a fresh session: the replay revoked the first one).
    session = login(admin_password).json()
    secrets["second access token"] = session["access_token"]
    secrets["second refresh token"] = session["refresh_token"]
    staff = {"Authorization": f"Bearer {session['access_token']}"}
    product = http.post(
        "/api/v1/products",
        headers=staff,
        json={"sku": "LEAK-1", "name": "Tea", "price_minor": 450, "currency": "EUR", "stock": 9},
    )
    assert product.status_code == 201, product.text
    order_body = {"items": [{"product_id": product.json()["id"], "quantity": 1}]}
    key = secrets["idempotency key"] = "idem-" + uuid.uuid4().hex
    first = http.post("/api/v1/orders", headers={**staff, "Idempotency-Key": key}, json=order_body)
    again = http.post("/api/v1/orders", headers={**staff, "Idempotency-Key": key}, json=order_body)
    assert first.status_code == 201, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    other_key = secrets["rejected idempotency key"] = "idem-" + uuid.uuid4().hex
    invalid = http.post(
        "/api/v1/orders", headers={**staff, "Idempotency-Key": other_key}, json={"items": []}
    )
    assert invalid.status_code == 422

    # A 500 carrying all of it, so Sentry gets an event with the request attached.
    boom = http.get(
        "/_test/observability/boom",
        params={"refresh_token": session["refresh_token"], "password": admin_password},
        headers={
            **staff,
            "Cookie": f"refresh_token={session['refresh_token']}",
            "Idempotency-Key": key,
        },
    )
    assert boom.status_code == 500
    wait_until(lambda: bool(sentry_ingest.items("event")), timeout=20, what="a Sentry event")
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    http.close()
    server.process.stop()  # flush: the SDK sends what is queued at exit

    log_lines = server.log_lines()
    assert log_lines
    for line in log_lines:
        orjson.loads(line)  # JSON lines only: nothing printed around the logger
    logs = "\n".join(log_lines)
    assert '"event":"request"' in logs
    sentry_payloads = sentry_ingest.raw()
    assert sentry_payloads
    # The event did carry the request, with the secret-bearing headers present but scrubbed.
    (event, *_) = [e for e in sentry_ingest.items("event") if e.get("level") == "error"]
    assert event["tags"]["request_id"] == boom.headers["x-request-id"]
    headers = event["request"]["headers"]
    assert headers["authorization"] == headers["idempotency-key"] == "[Filtered]"
    for name, secret in secrets.items():
        assert secret not in logs, f"{name} leaked into the logs"
        assert secret not in metrics.text, f"{name} leaked into /metrics"
        assert secret not in sentry_payloads, f"{name} leaked to Sentry"
