"""OWASP API8:2023 Security Misconfiguration, through `slipway doctor` and `slipway probe`.

- doctor (inside): a production configuration passes every check; the classic mistakes
  (debug on, docs public, wildcard CORS, public metrics, no HSTS) each fail their check;
- probe (outside): the production app, driven in-process over "https", passes every check
  except the TLS handshake (which needs a socket: tests/ops/test_probe.py runs it through the
  real Nginx); the same app with docs on, or with a CORS policy that reflects origins, fails
  exactly that check.

The full tables, one row per check, are tests/ops/test_doctor.py and tests/ops/test_probe.py.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slipway.app import create_app
from slipway.ops.checks import Report, Status
from slipway.ops.probe import ProbeConfig, ProbeContext, registry
from tests.conftest import make_settings
from tests.ops.test_doctor import (  # fixtures and the production environment they audit
    Doctor,
    clean_environment,
    databases,
    doctor,
    limited_cgroup,
    production_env,
)
from tests.support.services import RedisService

_ = (clean_environment, databases, doctor, limited_cgroup)


def _flagged(report: Report) -> dict[str, str]:
    return {r.id: r.status.value for r in report.results if r.status is not Status.PASS}


def test_doctor_passes_a_production_configuration(doctor: Doctor) -> None:
    report = doctor.run(production_env(doctor.databases.at_head))

    assert _flagged(report) == {}
    assert report.exit_code == 0


@pytest.mark.parametrize(
    ("mistake", "check_id"),
    [
        ({"DEBUG": "true"}, "app.debug"),
        ({"DOCS_ENABLED": "true"}, "api.docs"),
        ({"CORS_ORIGINS": "*"}, "http.cors"),
        ({"METRICS_EXPOSURE": "public"}, "metrics.exposure"),
        ({"HSTS_SECONDS": "0"}, "http.tls"),
        ({"ALLOWED_HOSTS": "*"}, "http.allowed_hosts"),
        ({"SECRET_KEY": "change-me-in-production"}, "secret.key"),
    ],
)
def test_doctor_fails_each_classic_mistake(
    doctor: Doctor, mistake: dict[str, str], check_id: str
) -> None:
    report = doctor.run({**production_env(doctor.databases.at_head), **mistake})

    assert _flagged(report) == {check_id: "fail"}
    assert report.exit_code == 1


#: Everything but the raw TLS handshake.
IN_PROCESS = [check_id for check_id in registry.ids if check_id != "tls.version"]


def _probe_app(database_url: str, redis: RedisService, **overrides: Any) -> Report:
    values: dict[str, Any] = {
        "environment": "production",
        "secret_key": secrets.token_urlsafe(48),
        "database_url": database_url,
        "redis_url": redis.url(9),
        "rate_limit_key_prefix": f"owasp-api8-{secrets.token_hex(4)}",
        "allowed_hosts": ["testserver"],
        "cors_origins": ["https://app.example.com"],
        "https_redirect": True,
        "public_base_url": "https://api.example.com",
    }
    values.update(overrides)
    app = create_app(make_settings(**values))
    config = ProbeConfig.from_url("https://testserver", http_url="http://testserver")
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        results = registry.run(ProbeContext(config, client), only=IN_PROCESS)
    return Report(tool="probe", target="in-process", results=results)


def test_probe_passes_the_production_app(database_url: str, redis_server: RedisService) -> None:
    report = _probe_app(database_url, redis_server)

    assert _flagged(report) == {}, report.to_json()


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"docs_enabled": True, "allow_docs_in_production": True}, "api.docs"),
        ({"environment": "staging", "cors_origins": ["*"]}, "cors.reflection"),
    ],
)
def test_probe_fails_a_misconfigured_app(
    database_url: str, redis_server: RedisService, overrides: dict[str, Any], check_id: str
) -> None:
    report = _probe_app(database_url, redis_server, **overrides)

    assert _flagged(report) == {check_id: "fail"}, report.to_json()
