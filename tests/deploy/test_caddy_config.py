"""deploy/caddy/Caddyfile: `caddy validate` (the real binary, Debian's package) in both
modes the file's placeholders select, `caddy fmt` clean, and the promises read back from
Caddy's own JSON translation (`caddy adapt`): automatic HTTPS with an ACME e-mail in
production and the local CA otherwise, health-checked upstreams, metrics refused. The file
runs for real in tests/integration/test_caddy_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slipway.platform.settings import Settings
from tests.deploy._tools import report, run
from tests.deploy.caddy_support import CADDYFILE, caddy_argv, caddy_binary, caddy_dirs, caddy_env

pytestmark = pytest.mark.deploy

#: Loopback ports nothing listens on: validation starts the active health checker, which
#: must not look up a Compose service name (`app`) in real DNS.
UPSTREAMS = ("127.0.0.1:9", "127.0.0.1:10")
MODES = {
    "local": {"domain": "localhost", "tls": "internal"},
    "production": {"domain": "api.example.com", "tls": "ops@example.com"},
}


def _env(tmp_path: Path, mode: str) -> dict[str, str]:
    return caddy_env(
        caddy_dirs(tmp_path),
        upstreams=UPSTREAMS,
        http_port=80,
        https_port=443,
        **MODES[mode],
    )


def _caddy(tmp_path: Path, command: str, mode: str, caddyfile: Path = CADDYFILE) -> Any:
    return run(caddy_argv(caddy_binary(), command, caddyfile), env=_env(tmp_path, mode))


@pytest.fixture(params=sorted(MODES))
def adapted(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    result = _caddy(tmp_path, "adapt", request.param)
    assert result.returncode == 0, report(result)
    config: dict[str, Any] = json.loads(result.stdout)
    return request.param, config


def _handlers(routes: list[dict[str, Any]]) -> list[tuple[list[Any], dict[str, Any]]]:
    """Every handler with the matchers on its path, depth first."""
    found: list[tuple[list[Any], dict[str, Any]]] = []
    for route in routes:
        for handler in route.get("handle", []):
            found.append((route.get("match", []), handler))
            found.extend(
                (route.get("match", []) + match, inner)
                for match, inner in _handlers(handler.get("routes", []))
            )
    return found


@pytest.mark.parametrize("mode", sorted(MODES))
def test_caddy_validate(tmp_path: Path, mode: str) -> None:
    result = _caddy(tmp_path, "validate", mode)
    assert result.returncode == 0, report(result)
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddy_validate_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "Caddyfile"
    text = CADDYFILE.read_text(encoding="utf-8")
    broken.write_text(text.replace("lb_policy least_conn", "lb_policy least_connections"))
    result = _caddy(tmp_path, "validate", "local", broken)
    assert result.returncode != 0
    assert "least_connections" in result.stdout + result.stderr


def test_caddyfile_is_formatted(tmp_path: Path) -> None:
    result = run([caddy_binary(), "fmt", str(CADDYFILE)], env=_env(tmp_path, "local"))
    assert result.returncode == 0, report(result)
    assert result.stdout == CADDYFILE.read_text(encoding="utf-8"), "run `caddy fmt --overwrite`"


def test_tls_mode_follows_the_placeholder(adapted: tuple[str, dict[str, Any]]) -> None:
    mode, config = adapted
    (policy,) = config["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == [MODES[mode]["domain"]]
    issuers = policy["issuers"]
    if mode == "production":
        # Automatic HTTPS: Let's Encrypt, ZeroSSL as the fallback, one account e-mail.
        assert [issuer["module"] for issuer in issuers] == ["acme", "zerossl"]
        assert {issuer["email"] for issuer in issuers} == {"ops@example.com"}
    else:
        assert issuers == [{"module": "internal"}]
    # The local CA is never written into the host's trust store.
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False


def test_reverse_proxy_balances_over_checked_instances(
    adapted: tuple[str, dict[str, Any]],
) -> None:
    _, config = adapted
    server = config["apps"]["http"]["servers"]["srv0"]
    proxies = [h for _, h in _handlers(server["routes"]) if h["handler"] == "reverse_proxy"]
    (proxy,) = proxies
    assert [u["dial"] for u in proxy["upstreams"]] == list(UPSTREAMS)
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "least_conn"}
    active = proxy["health_checks"]["active"]
    assert active["uri"] == "/health/ready"
    assert active["expect_status"] == 200
    assert proxy["health_checks"]["passive"]["max_fails"] >= 1
    # The proxy closes idle upstream connections before the app does.
    keepalive_ns = proxy["transport"]["keep_alive"]["idle_timeout"]
    assert keepalive_ns / 1e9 < Settings.model_fields["keepalive_timeout"].default


def test_metrics_are_refused_and_bodies_bounded(adapted: tuple[str, dict[str, Any]]) -> None:
    _, config = adapted
    server = config["apps"]["http"]["servers"]["srv0"]
    handlers = _handlers(server["routes"])
    refused = [match for match, h in handlers if h["handler"] == "static_response"]
    assert {"path": ["/metrics*"]} in refused[0]
    (body,) = [h for _, h in handlers if h["handler"] == "request_body"]
    assert body["max_size"] > Settings.model_fields["max_body_size"].default
