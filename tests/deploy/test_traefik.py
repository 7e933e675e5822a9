"""deploy/traefik/: the static configuration, the file-provider configuration and the
Compose labels, each checked against SchemaStore's Traefik JSON schemas (vendored from a
PyPI package, tests/deploy/schemas/README.md) with every object closed, so a misspelt key
fails; then what the setup promises: HTTPS with certificates from Let's Encrypt, HTTP
redirected, health-checked replicas, /metrics never routed, rate limits, and the app
trusting X-Forwarded-* from Traefik's address only.

The labels are turned into the dynamic configuration they describe (Traefik's label
syntax: dotted paths, comma-separated lists), which is what the schema checks. There is no
Traefik binary or Docker engine here, so nothing is started.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

import pytest

from slipway.platform.settings import Settings
from tests.deploy._tools import (
    DEPLOY,
    ROOT,
    SCHEMAS,
    interpolate,
    load_json,
    load_yaml,
    schema_errors,
    unknown_settings,
    vendored_schema,
)

pytestmark = pytest.mark.deploy

TRAEFIK = DEPLOY / "traefik"
PROD_ENV = {"SLIPWAY_TAG": "0123456789abcdef", "SLIPWAY_DOMAIN": "api.example.com"}
#: Label keys whose values are comma-separated lists in Traefik's label syntax.
LIST_KEYS = {"entryPoints", "middlewares"}


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def static_schema() -> dict[str, Any]:
    schema: dict[str, Any] = closed(load_json(SCHEMAS / "traefik-v2.json"))
    return schema


@pytest.fixture(scope="module")
def dynamic_schema() -> dict[str, Any]:
    schema: dict[str, Any] = closed(load_json(SCHEMAS / "traefik-v2-file-provider.json"))
    return schema


@pytest.fixture(scope="module")
def static() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(TRAEFIK / "traefik.yml")
    return config


@pytest.fixture(scope="module")
def dynamic() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(TRAEFIK / "dynamic.yml")
    return config


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    document: dict[str, Any] = interpolate(load_yaml(TRAEFIK / "compose.traefik.yml"), PROD_ENV)
    return document


def merge(base: Any, extra: Any) -> Any:
    """Compose's merge of an override file, for the shapes these files use: mappings merge
    key by key, anything else is replaced (neither file gives one service a list twice)."""
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return extra


@pytest.fixture(scope="module")
def stack(override: dict[str, Any]) -> dict[str, Any]:
    base = interpolate(load_yaml(ROOT / "compose.prod.yml"), PROD_ENV)
    merged: dict[str, Any] = merge(base, override)
    return merged


def labels_to_config(labels: list[str]) -> dict[str, Any]:
    """`traefik.http.a.b.c=v` labels as the nested configuration Traefik builds."""
    config: dict[str, Any] = {}
    for label in labels:
        key, _, value = label.partition("=")
        parts = key.split(".")
        assert parts[0] == "traefik", label
        if parts[1] in {"enable", "docker"}:
            continue
        node = config
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        leaf = parts[-1]
        assert leaf not in node, f"{key} twice"
        node[leaf] = value.split(",") if leaf in LIST_KEYS else value
    return config


def typed(config: Any) -> Any:
    """Label values are strings; Traefik converts them to the schema's types."""
    if isinstance(config, dict):
        return {key: typed(value) for key, value in config.items()}
    if isinstance(config, list):
        return [typed(item) for item in config]
    if isinstance(config, str) and config.isdigit():
        return int(config)
    return config


def as_file_provider(config: dict[str, Any], container: str) -> dict[str, Any]:
    """The Docker provider's `loadBalancer.server` ({port, scheme} of each container)
    becomes the file provider's `loadBalancer.servers` list of URLs."""
    result = copy.deepcopy(config)
    for service in result.get("http", {}).get("services", {}).values():
        balancer = service["loadBalancer"]
        server = balancer.pop("server")
        url = f"{server.get('scheme', 'http')}://{container}:{server['port']}"
        balancer["servers"] = [{"url": url}]
    return result


@pytest.fixture(scope="module")
def label_config(override: dict[str, Any]) -> dict[str, Any]:
    return typed(labels_to_config(override["services"]["app"]["labels"]))


# --- the schemas --------------------------------------------------------------------------


def test_static_config_matches_the_schema(
    static: dict[str, Any], static_schema: dict[str, Any]
) -> None:
    assert schema_errors(static, static_schema) == []


def test_dynamic_config_matches_the_schema(
    dynamic: dict[str, Any], dynamic_schema: dict[str, Any]
) -> None:
    assert schema_errors(dynamic, dynamic_schema) == []


def test_labels_match_the_schema(
    label_config: dict[str, Any], dynamic_schema: dict[str, Any]
) -> None:
    assert set(label_config) == {"http"}
    assert schema_errors(as_file_provider(label_config, "172.28.0.2"), dynamic_schema) == []


def test_schema_checks_can_fail(
    static: dict[str, Any],
    dynamic: dict[str, Any],
    static_schema: dict[str, Any],
    dynamic_schema: dict[str, Any],
) -> None:
    broken_static = copy.deepcopy(static)
    broken_static["entryPoints"]["websecure"]["adress"] = ":443"
    broken_static["providers"]["docker"]["exposedByDefault"] = "no"
    broken_dynamic = copy.deepcopy(dynamic)
    broken_dynamic["http"]["middlewares"]["auth-ratelimit"]["rateLimit"]["burst"] = "five"
    broken_dynamic["http"]["middlewares"]["security-headers"]["headers"]["frameDenny"] = True

    static_errors = "\n".join(schema_errors(broken_static, static_schema))
    dynamic_errors = "\n".join(schema_errors(broken_dynamic, dynamic_schema))
    assert "adress" in static_errors
    assert "'no' is not of type 'boolean'" in static_errors
    # Middlewares are a oneOf over every kind: the error names the middleware.
    assert "http/middlewares/auth-ratelimit:" in dynamic_errors
    assert "http/middlewares/security-headers:" in dynamic_errors


def test_compose_override_matches_the_compose_schema(
    override: dict[str, Any], stack: dict[str, Any]
) -> None:
    schema = vendored_schema("compose-spec")
    assert schema_errors(override, schema) == []
    assert schema_errors(stack, schema) == []


# --- what the setup promises ----------------------------------------------------------------


def test_https_with_lets_encrypt_and_http_redirected(static: dict[str, Any]) -> None:
    entry_points = static["entryPoints"]
    assert entry_points["web"]["address"] == ":80"
    redirect = entry_points["web"]["http"]["redirections"]["entryPoint"]
    assert (redirect["to"], redirect["scheme"]) == ("websecure", "https")
    assert entry_points["websecure"]["address"] == ":443"
    resolver = entry_points["websecure"]["http"]["tls"]["certResolver"]
    acme = static["certificatesResolvers"][resolver]["acme"]
    assert re.fullmatch(r"[^@\s]+@[^@\s]+", acme["email"])
    assert acme["storage"].startswith("/letsencrypt/")
    assert "tlsChallenge" in acme, "TLS-ALPN-01 on :443: no port-80 challenge route"
    assert static["entryPoints"]["websecure"]["forwardedHeaders"]["insecure"] is False


def test_only_labelled_containers_are_routed(static: dict[str, Any], stack: dict[str, Any]) -> None:
    docker = static["providers"]["docker"]
    assert docker["exposedByDefault"] is False
    project = stack["name"]
    assert docker["network"] == f"{project}_frontend"
    assert "frontend" in stack["services"]["app"]["networks"]


def test_mounted_files_are_the_ones_traefik_reads(
    static: dict[str, Any], override: dict[str, Any]
) -> None:
    traefik = override["services"]["traefik"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in traefik["volumes"]}
    assert mounts["/etc/traefik/traefik.yml"] == "./deploy/traefik/traefik.yml"
    assert mounts["/etc/traefik/dynamic.yml"] == "./deploy/traefik/dynamic.yml"
    assert static["providers"]["file"]["filename"] == "/etc/traefik/dynamic.yml"
    acme_dir = static["certificatesResolvers"]["letsencrypt"]["acme"]["storage"].rsplit("/", 1)[0]
    assert mounts[acme_dir] in override["volumes"], "certificates survive a restart"
    assert traefik["healthcheck"]["test"] == ["CMD", "traefik", "healthcheck", "--ping"]
    assert static["ping"]["entryPoint"] in static["entryPoints"]


def test_routers_reference_what_exists(
    label_config: dict[str, Any], static: dict[str, Any], dynamic: dict[str, Any]
) -> None:
    http = label_config["http"]
    defined = set(dynamic["http"]["middlewares"])
    for name, router in http["routers"].items():
        assert set(router["entryPoints"]) <= set(static["entryPoints"]), name
        assert router["service"] in http["services"], name
        for middleware in router["middlewares"]:
            assert middleware.endswith("@file"), middleware
            assert middleware.removesuffix("@file") in defined, middleware
        assert "security-headers@file" in router["middlewares"], name


def test_rules_and_limits(label_config: dict[str, Any], dynamic: dict[str, Any]) -> None:
    routers = label_config["http"]["routers"]
    domain = PROD_ENV["SLIPWAY_DOMAIN"]
    assert routers["slipway"]["rule"] == f"Host(`{domain}`) && !PathPrefix(`/metrics`)"
    auth = routers["slipway-auth"]
    assert auth["rule"] == f"Host(`{domain}`) && PathPrefix(`/api/v1/auth/`)"
    assert auth["priority"] > len(routers["slipway"]["rule"]), "auth wins over the catch-all"
    assert "auth-ratelimit@file" in auth["middlewares"]
    limits = dynamic["http"]["middlewares"]
    assert limits["auth-ratelimit"]["rateLimit"]["period"] == "1m"
    assert limits["auth-ratelimit"]["rateLimit"]["average"] <= 10


def test_replicas_are_health_checked(label_config: dict[str, Any], stack: dict[str, Any]) -> None:
    balancer = label_config["http"]["services"]["slipway"]["loadBalancer"]
    app_env = stack["services"]["app"]["environment"]
    assert balancer["server"]["port"] == int(app_env["PORT"])
    assert balancer["healthCheck"]["path"] == "/health/ready"
    assert "app" not in stack["services"]["app"].get("container_name", ""), "replicas scale"


def test_upstream_idle_timeout_below_the_apps(
    static: dict[str, Any], stack: dict[str, Any]
) -> None:
    idle = static["serversTransport"]["forwardingTimeouts"]["idleConnTimeout"]
    assert idle.endswith("s")
    app_keepalive = int(stack["services"]["app"]["environment"]["KEEPALIVE_TIMEOUT"])
    assert int(idle.removesuffix("s")) < app_keepalive


def test_app_trusts_forwarded_headers_from_traefik_only(stack: dict[str, Any]) -> None:
    services = stack["services"]
    traefik_address = services["traefik"]["networks"]["frontend"]["ipv4_address"]
    subnet = stack["networks"]["frontend"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(traefik_address) in ipaddress.ip_network(subnet)
    assert services["app"]["environment"]["FORWARDED_ALLOW_IPS"] == traefik_address
    assert traefik_address != services["nginx"]["networks"]["frontend"]["ipv4_address"]
    assert services["nginx"]["profiles"] == ["nginx"], "Nginx is not started beside Traefik"
    assert unknown_settings(set(services["app"]["environment"])) == set()


def test_security_headers_match_the_apps(dynamic: dict[str, Any]) -> None:
    headers = dynamic["http"]["middlewares"]["security-headers"]["headers"]
    hsts = headers["stsSeconds"]
    assert hsts == Settings.model_fields["hsts_seconds"].default
    # Traefik replaces what the app sent: the values must be the app's own.
    assert headers["referrerPolicy"] == "no-referrer"
    assert "contentSecurityPolicy" not in headers, "the app's CSP (relaxed on /docs) stays"


def test_label_check_can_fail(override: dict[str, Any], dynamic_schema: dict[str, Any]) -> None:
    labels = [
        label.replace("healthCheck.path", "healthCheck.pth")
        for label in override["services"]["app"]["labels"]
    ]
    config = as_file_provider(typed(labels_to_config(labels)), "172.28.0.2")
    assert "http/services/slipway:" in "\n".join(schema_errors(config, dynamic_schema))
