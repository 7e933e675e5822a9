"""deploy/nginx: `nginx -t` on the rendered config, and the rules the config must keep.

The structure is read with crossplane (Nginx's own grammar, includes followed), not with
regular expressions, so the assertions hold for the config Nginx actually loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import crossplane  # type: ignore[import-untyped]
import pytest

from slipway.platform.settings import Settings
from tests.deploy.nginx_support import (
    NGINX_DIR,
    make_self_signed,
    nginx_binary,
    nginx_test,
    nginx_version,
    render_nginx,
)
from tests.support.ports import free_port

pytestmark = [pytest.mark.deploy]

Directive = dict[str, Any]
SECURITY_SNIPPET = "slipway/security-headers.conf"
PROXY_SNIPPET = "slipway/proxy.conf"


def _parse(single: bool) -> list[Directive]:
    payload = crossplane.parse(
        str(NGINX_DIR / "nginx.conf"), single=single, check_ctx=False, check_args=False
    )
    assert payload["status"] == "ok", payload["errors"]
    if single:
        return list(payload["config"][0]["parsed"])
    # Splice included files in place, so blocks show their effective directives.
    files = {entry["file"]: entry["parsed"] for entry in payload["config"]}

    def expand(block: list[Directive]) -> list[Directive]:
        out: list[Directive] = []
        for directive in block:
            if directive["directive"] == "include":
                for index in directive.get("includes", []):
                    out.extend(expand(payload["config"][index]["parsed"]))
                continue
            if "block" in directive:
                out.append({**directive, "block": expand(directive["block"])})
            else:
                out.append(directive)
        return out

    return expand(files[str(NGINX_DIR / "nginx.conf")])


@pytest.fixture(scope="module")
def expanded() -> list[Directive]:
    return _parse(single=False)


@pytest.fixture(scope="module")
def literal() -> list[Directive]:
    return _parse(single=True)


def find(block: list[Directive], name: str) -> list[Directive]:
    return [d for d in block if d["directive"] == name]


def one(block: list[Directive], name: str) -> Directive:
    found = find(block, name)
    assert len(found) == 1, (name, found)
    return found[0]


def http(config: list[Directive]) -> list[Directive]:
    return list(one(config, "http")["block"])


def tls_server(config: list[Directive]) -> list[Directive]:
    servers = find(http(config), "server")
    [server] = [s for s in servers if any("ssl" in d["args"] for d in find(s["block"], "listen"))]
    return list(server["block"])


def location(server: list[Directive], *args: str) -> list[Directive]:
    for directive in find(server, "location"):
        if tuple(directive["args"]) == args:
            return list(directive["block"])
    raise AssertionError(f"no location {' '.join(args)}")


def _rate_per_second(text: str) -> float:
    match = re.fullmatch(r"rate=(\d+)r/([sm])", text)
    assert match, text
    return int(match.group(1)) / (1 if match.group(2) == "s" else 60)


# --- nginx -t ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary() -> str:
    return nginx_binary()


def _render(tmp_path: Path, binary: str) -> Any:
    static = tmp_path / "static"
    static.mkdir()
    return render_nginx(
        tmp_path / "nginx",
        http_port=free_port(),
        https_port=free_port(),
        upstreams=["127.0.0.1:18001", "127.0.0.1:18002"],
        tls=make_self_signed(tmp_path / "tls"),
        static_root=static,
        version=nginx_version(binary),
    )


def test_nginx_t_accepts_the_rendered_config(tmp_path: Path, binary: str) -> None:
    result = nginx_test(binary, _render(tmp_path, binary))

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[emerg]" not in result.stderr


def test_nginx_t_rejects_a_broken_config(tmp_path: Path, binary: str) -> None:
    """The validator is not vacuous: an undefined zone fails it."""
    rendered = _render(tmp_path, binary)
    text = rendered.conf.read_text().replace("zone=auth burst", "zone=missing burst")
    rendered.conf.write_text(text)

    result = nginx_test(binary, rendered)

    assert result.returncode != 0
    assert "missing" in result.stderr


# --- what the config promises ------------------------------------------------------------


def test_rate_limit_zones_live_in_the_http_block(literal: list[Directive]) -> None:
    zones = {d["args"][1]: d["args"] for d in find(http(literal), "limit_req_zone")}

    assert set(zones) == {"zone=api:10m", "zone=auth:10m"}
    assert zones["zone=api:10m"][0] == zones["zone=auth:10m"][0] == "$binary_remote_addr"
    api_rate = _rate_per_second(zones["zone=api:10m"][2])
    auth_rate = _rate_per_second(zones["zone=auth:10m"][2])
    assert auth_rate < api_rate / 10
    assert one(http(literal), "limit_req_status")["args"] == ["429"]
    # Never inside a server block (ERRATA).
    for server in find(http(literal), "server"):
        assert not find(server["block"], "limit_req_zone")


def test_auth_routes_use_the_strict_zone(expanded: list[Directive]) -> None:
    auth = location(tls_server(expanded), "^~", "/api/v1/auth/")
    default = location(tls_server(expanded), "/")

    assert one(auth, "limit_req")["args"][0] == "zone=auth"
    assert one(default, "limit_req")["args"][0] == "zone=api"


def test_health_is_unlimited_and_unlogged(expanded: list[Directive]) -> None:
    server = tls_server(expanded)
    health = location(server, "^~", "/health")

    assert not find(health, "limit_req")
    assert one(health, "access_log")["args"] == ["off"]
    # limit_req would be inherited from the server level: there must be none there.
    assert not find(server, "limit_req")


def test_metrics_are_denied(expanded: list[Directive]) -> None:
    metrics = location(tls_server(expanded), "^~", "/metrics")

    assert one(metrics, "deny")["args"] == ["all"]
    assert not find(metrics, "proxy_pass")


def test_security_headers_are_never_dropped_by_a_location(literal: list[Directive]) -> None:
    """add_header in a location drops the inherited ones: each such location re-includes
    the snippet."""
    server = tls_server(literal)
    assert SECURITY_SNIPPET in [d["args"][0] for d in find(server, "include")]
    for block in find(server, "location"):
        if find(block["block"], "add_header"):
            includes = [d["args"][0] for d in find(block["block"], "include")]
            assert SECURITY_SNIPPET in includes, block["args"]


def test_security_snippet_sends_every_header_always(expanded: list[Directive]) -> None:
    headers = {d["args"][0].lower(): d["args"] for d in find(tls_server(expanded), "add_header")}

    assert set(headers) == {
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "content-security-policy",
        "cross-origin-opener-policy",
        "cross-origin-resource-policy",
        "permissions-policy",
    }
    assert all(args[-1] == "always" for args in headers.values())


def test_proxied_locations_share_the_forwarding_headers(literal: list[Directive]) -> None:
    proxy_snippet = crossplane.parse(
        str(NGINX_DIR / PROXY_SNIPPET), single=True, check_ctx=False, check_args=False
    )["config"][0]["parsed"]
    set_headers = {d["args"][0]: d["args"][1] for d in find(proxy_snippet, "proxy_set_header")}
    assert set_headers["X-Forwarded-For"] == "$remote_addr"
    assert set_headers["X-Forwarded-Proto"] == "$scheme"
    assert set_headers["X-Forwarded-Host"] == "$host"
    assert set_headers["X-Request-ID"] == "$slipway_request_id"
    assert set_headers["Connection"] == "$connection_upgrade"

    for block in find(tls_server(literal), "location"):
        body = block["block"]
        # proxy_set_header in a location would drop the snippet's headers.
        assert not find(body, "proxy_set_header"), block["args"]
        assert not find(body, "proxy_pass"), block["args"]


def walk(block: list[Directive]) -> list[Directive]:
    out: list[Directive] = []
    for directive in block:
        out.append(directive)
        out.extend(walk(directive.get("block", [])))
    return out


def test_only_idempotent_requests_are_retried(expanded: list[Directive]) -> None:
    retries = [d for d in walk(expanded) if d["directive"] == "proxy_next_upstream"]
    assert retries
    assert all("non_idempotent" not in d["args"] for d in retries)
    retry = one(location(tls_server(expanded), "/"), "proxy_next_upstream")
    assert retry["args"] == ["error", "timeout"]


def test_tls_is_modern(expanded: list[Directive]) -> None:
    block = http(expanded)
    assert one(block, "ssl_protocols")["args"] == ["TLSv1.2", "TLSv1.3"]
    ciphers = one(block, "ssl_ciphers")["args"][0].split(":")
    assert ciphers
    for cipher in ciphers:
        assert cipher.startswith("ECDHE-"), cipher
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher


def test_http_redirects_to_https(expanded: list[Directive]) -> None:
    [plain] = [
        s["block"]
        for s in find(http(expanded), "server")
        if all("ssl" not in d["args"] for d in find(s["block"], "listen"))
    ]
    assert one(location(plain, "/"), "return")["args"] == ["301", "https://$host$request_uri"]


def test_upstream_balances_and_keeps_connections_below_the_app_keepalive(
    expanded: list[Directive],
) -> None:
    upstream = one(http(expanded), "upstream")["block"]
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert find(upstream, "least_conn")
    assert int(one(upstream, "keepalive")["args"][0]) > 0
    servers = find(upstream, "server")
    assert servers
    assert all(any(a.startswith("max_fails=") for a in s["args"]) for s in servers)
    idle = int(one(upstream, "keepalive_timeout")["args"][0].removesuffix("s"))
    # The proxy must close idle connections before the app does (ERRATA).
    assert idle < settings.keepalive_timeout


def test_body_limit_leaves_room_for_the_app_envelope(expanded: list[Directive]) -> None:
    size = one(http(expanded), "client_max_body_size")["args"][0]
    assert size.endswith("m")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert int(size[:-1]) * 1024 * 1024 > settings.max_body_size
    assert one(http(expanded), "gzip")["args"] == ["on"]


def test_access_log_is_json(expanded: list[Directive]) -> None:
    block = http(expanded)
    log_format = one(block, "log_format")
    name, escape, *parts = log_format["args"]
    assert escape == "escape=json"
    assert one(block, "access_log")["args"][1] == name
    # With every variable replaced by a sample value, the template is one JSON object.
    sample = re.sub(r"\$[a-z_]+", "1", "".join(parts))
    record = json.loads(sample)
    assert {"remote_addr", "request_id", "status", "upstream_addr"} <= set(record)
