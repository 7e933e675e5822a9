"""`slipway.lambda_handler.handler` answers API Gateway HTTP API (payload v2.0) events.

The handler runs in a fresh interpreter, as in a Lambda sandbox: a cold start, then warm
invocations, against an embedded SQLite database migrated beforehand.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from slipway.platform.db.migrate import upgrade
from tests.conftest import make_settings
from tests.integration.conftest import slipway_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_DOMAIN = "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
SOURCE_IP = "198.51.100.7"

# Invokes the handler like the Lambda runtime: import once, call per event, print results.
RUNTIME = """
import json, sys
import slipway.lambda_handler as module

# Nothing is built at import time (a short init phase).
assert module._adapter.cache_info().currsize == 0
results = [module.handler(json.loads(event), None) for event in json.load(sys.stdin)]
app = module._adapter().app
print(json.dumps({"results": results, "null_pool": app.state.settings.db_null_pool}))
"""


def http_api_event(
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as AWS sends it."""
    headers = {
        "accept": "application/json",
        "content-length": str(len(body or b"")),
        "host": API_DOMAIN,
        "user-agent": "curl/8.5.0",
        "x-amzn-trace-id": "Root=1-6740f1a0-3c1f1e0a5d2b4c6e8f0a1b2c",
        "x-forwarded-for": SOURCE_IP,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if body is not None:
        headers["content-type"] = content_type
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": API_DOMAIN,
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": "curl/8.5.0",
            },
            "requestId": "cX9kQjZxIAMEbvA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:04:30:00 +0000",
            "timeEpoch": 1795149000000,
        },
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def invoke(tmp_path: Path, env: dict[str, str], events: list[dict[str, Any]]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", RUNTIME],
        input=json.dumps([json.dumps(event) for event in events]),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    last_line = result.stdout.strip().splitlines()[-1]
    output: dict[str, Any] = json.loads(last_line)
    return output


@pytest.fixture
def lambda_env(tmp_path: Path) -> dict[str, str]:
    database = tmp_path / "lambda.db"
    url = f"sqlite+aiosqlite:///{database}"
    upgrade(make_settings(database_url=url))
    return slipway_env(
        ENVIRONMENT="production",
        SECRET_KEY="lambda-secret-" + "l" * 40,
        DATABASE_URL=url,
        ALLOW_SQLITE_IN_PRODUCTION="true",
        ALLOW_EMBEDDED_JOBS_IN_PRODUCTION="true",
        ALLOWED_HOSTS=API_DOMAIN,
        LOG_FORMAT="json",
        AWS_LAMBDA_FUNCTION_NAME="slipway-api",
    )


def test_http_api_v2_events_get_json_from_the_embedded_database(
    tmp_path: Path, lambda_env: dict[str, str]
) -> None:
    output = invoke(
        tmp_path,
        lambda_env,
        [
            http_api_event("GET", "/health/ready"),
            http_api_event("GET", "/info"),
            http_api_event("GET", "/health/ready"),  # a warm invocation
            http_api_event("GET", "/api/v1/nope", query="page=2"),
        ],
    )
    ready, info, warm, missing = output["results"]

    assert ready["statusCode"] == 200, ready
    assert ready["headers"]["content-type"] == "application/json"
    assert ready["isBase64Encoded"] is False
    body = json.loads(ready["body"])
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert ready["headers"]["x-request-id"]
    # HSTS: the event says https, and the app trusts the scheme API Gateway reports.
    assert "strict-transport-security" in ready["headers"]

    assert info["statusCode"] == 200
    assert json.loads(info["body"])["environment"] == "production"
    assert warm["statusCode"] == 200
    assert missing["statusCode"] == 404
    assert json.loads(missing["body"])["error"]["code"] == "not_found"
    assert output["null_pool"] is True


def test_unknown_host_is_refused(tmp_path: Path, lambda_env: dict[str, str]) -> None:
    """The app's host check still applies behind API Gateway."""
    event = http_api_event("GET", "/info")
    event["headers"]["host"] = "evil.example.com"

    output = invoke(tmp_path, lambda_env, [event])

    assert output["results"][0]["statusCode"] == 400


def test_a_base64_form_body_reaches_the_app(tmp_path: Path, lambda_env: dict[str, str]) -> None:
    """API Gateway base64-encodes bodies; the login form is decoded and checked."""
    event = http_api_event(
        "POST",
        "/api/v1/auth/login",
        body=b"username=nobody%40example.com&password=wrong-password-123",
        content_type="application/x-www-form-urlencoded",
    )

    output = invoke(tmp_path, lambda_env, [event])

    response = output["results"][0]
    assert response["statusCode"] == 401, response
    assert json.loads(response["body"])["error"]["code"]
