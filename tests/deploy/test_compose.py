"""compose.yml (development) and compose.prod.yml (production), checked against the
compose-spec JSON schema (the copy check-jsonschema ships) after Compose's own variable
interpolation, then for what the stack must guarantee: migrations before the app, an app
that scales behind Nginx, health checks, isolation, limits and secrets the app accepts.

There is no Docker engine here, so `docker compose config` cannot run; the schema is the
same one Compose validates against.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._tools import (
    BEAT,
    DEPLOY,
    GRACEFUL_TIMEOUT,
    HEALTHCHECK,
    MIGRATE,
    ROOT,
    WEB_GUNICORN,
    WORKER,
    InterpolationError,
    interpolate,
    load_yaml,
    run,
    schema_errors,
    settings_from,
    unknown_settings,
    vendored_schema,
)
from tests.support.process import require_or_skip

pytestmark = pytest.mark.deploy

DEV = ROOT / "compose.yml"
PROD = ROOT / "compose.prod.yml"
#: What an operator exports before `docker compose -f compose.prod.yml up` (docs).
PROD_ENV = {"SLIPWAY_TAG": "0123456789abcdef", "SLIPWAY_DOMAIN": "api.example.com"}


def compose(path: Path, environment: dict[str, str] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = interpolate(load_yaml(path), environment or {})
    return document


@pytest.fixture(scope="module")
def prod() -> dict[str, Any]:
    return compose(PROD, PROD_ENV)


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return compose(DEV)


def seconds(duration: str) -> float:
    """Compose durations: 30s, 1m30s, 180s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return value.split() if isinstance(value, str) else list(value)


def published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


# --- the schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "environment"), [(DEV, {}), (PROD, PROD_ENV)], ids=["dev", "prod"]
)
def test_valid_against_the_compose_spec(path: Path, environment: dict[str, str]) -> None:
    errors = schema_errors(compose(path, environment), vendored_schema("compose-spec"))
    assert errors == []


def test_schema_rejects_a_misspelt_key(prod: dict[str, Any]) -> None:
    """The check can fail: one typo in a service is reported."""
    broken = copy.deepcopy(prod)
    broken["services"]["app"]["healthcheck"]["intervall"] = "5s"
    errors = schema_errors(broken, vendored_schema("compose-spec"))
    assert any("intervall" in error for error in errors), errors


def test_prod_refuses_to_start_without_an_image_tag_or_domain() -> None:
    """`${SLIPWAY_TAG:?...}`: Compose stops before pulling an unpinned `latest`."""
    for missing in PROD_ENV:
        environment = {name: value for name, value in PROD_ENV.items() if name != missing}
        with pytest.raises(InterpolationError, match=missing):
            compose(PROD, environment)


# --- production: order, scaling, health -------------------------------------------------


def test_app_waits_for_the_one_shot_migration(prod: dict[str, Any]) -> None:
    services = prod["services"]
    migrate = services["migrate"]
    assert command(migrate) == MIGRATE
    assert migrate["restart"] == "no", "a one-shot service must not be restarted"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("app", "worker", "beat"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_app_scales_behind_nginx(prod: dict[str, Any]) -> None:
    """`--scale app=4` needs an app without a fixed name or host port; Nginx reaches the
    replicas by the service name on a network they share."""
    services = prod["services"]
    app, nginx = services["app"], services["nginx"]
    assert "container_name" not in app
    assert published(app) == []
    assert "8000" in [str(port) for port in app["expose"]]
    assert command(app) == WEB_GUNICORN
    assert isinstance(app["deploy"]["replicas"], int | str)
    assert set(app["networks"]) & set(nginx["networks"]) == {"frontend"}
    assert {"80:80", "443:443"} <= set(published(nginx))


def test_nginx_config_resolves_the_app_service(prod: dict[str, Any]) -> None:
    """Nginx's upstream names the service and re-resolves it through Docker's DNS, so
    replicas added by --scale receive traffic without a reload."""
    nginx = prod["services"]["nginx"]
    mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in nginx["volumes"]}
    assert mounts["/etc/nginx/nginx.conf"] == "./deploy/nginx/nginx.conf"
    assert mounts["/etc/nginx/slipway"] == "./deploy/nginx/slipway"
    assert mounts["/etc/nginx/certs"] == "./deploy/nginx/certs"
    upstream = DEPLOY / "nginx" / "slipway" / "upstream.conf"
    if not upstream.is_file():
        require_or_skip("deploy/nginx/slipway/upstream.conf is not written yet")
    text = re.sub(r"#.*", "", upstream.read_text(encoding="utf-8"))
    server = re.search(r"server\s+app:(\d+)\b([^;]*);", text)
    assert server, "the upstream must name the Compose service"
    assert server.group(1) == prod["services"]["app"]["environment"]["PORT"]
    assert "resolve" in server.group(2).split()
    assert re.search(r"resolver\s+127\.0\.0\.11\b", text), "Docker's embedded DNS"
    version = re.match(r"nginx:(\d+)\.(\d+)", nginx["image"])
    assert version, nginx["image"]
    assert (int(version.group(1)), int(version.group(2))) >= (1, 28), "`resolve` needs 1.27.3+"


def test_proxy_headers_are_trusted_from_nginx_only(prod: dict[str, Any]) -> None:
    services = prod["services"]
    nginx_address = services["nginx"]["networks"]["frontend"]["ipv4_address"]
    assert services["app"]["environment"]["FORWARDED_ALLOW_IPS"] == nginx_address
    subnet = prod["networks"]["frontend"]["ipam"]["config"][0]["subnet"]
    import ipaddress

    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(subnet)


def test_health_checks(prod: dict[str, Any]) -> None:
    services = prod["services"]
    app_check = services["app"]["healthcheck"]["test"]
    assert app_check == ["CMD", *HEALTHCHECK]
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("migrate", "app"):
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_processes_and_their_stop_timeouts(prod: dict[str, Any]) -> None:
    services = prod["services"]
    assert command(services["worker"]) == WORKER
    assert command(services["beat"]) == BEAT
    assert services["beat"]["deploy"]["replicas"] == 1, "exactly one scheduler"
    assert seconds(services["app"]["stop_grace_period"]) > GRACEFUL_TIMEOUT
    assert seconds(services["worker"]["stop_grace_period"]) >= 150  # JOBS_TIME_LIMIT


def test_app_containers_are_locked_down(prod: dict[str, Any]) -> None:
    for name in ("migrate", "app", "worker", "beat"):
        service = prod["services"][name]
        assert service["user"].split(":")[0] == "10001", name
        assert service["read_only"] is True, name
        assert any(mount.startswith("/tmp") for mount in service["tmpfs"]), name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    env = prod["services"]["app"]["environment"]
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/"), "must be on the tmpfs"


def test_isolation_limits_and_restarts(prod: dict[str, Any]) -> None:
    services = prod["services"]
    for name in ("db", "redis"):
        assert services[name]["networks"] == ["backend"], name
        assert published(services[name]) == [], f"{name} must not be published"
    assert services["nginx"]["networks"].keys() == {"frontend"}
    for name in ("prometheus", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in published(services[name])), name
    for name, service in services.items():
        assert service["deploy"]["resources"]["limits"]["memory"], name
        if name != "migrate":
            assert service["restart"] in {"always", "unless-stopped"}, name


def test_database_and_redis_durability(prod: dict[str, Any]) -> None:
    services = prod["services"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["db"]["volumes"])
    redis = services["redis"]
    args = command(redis)
    assert args[args.index("--appendonly") + 1] == "yes"
    assert "--maxmemory" in args
    policy = args[args.index("--maxmemory-policy") + 1]
    # The job queues have no TTL: a policy that can evict them loses queued jobs.
    assert policy == "noeviction" or policy.startswith("volatile-"), policy
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_secrets_come_from_files(prod: dict[str, Any]) -> None:
    services = prod["services"]
    for name in ("migrate", "app", "worker", "beat"):
        env = services[name]["environment"]
        assert env["SECRETS_DIR"] == "/run/secrets"
        assert {"SECRET_KEY", "DATABASE_URL"}.isdisjoint(env), "secrets must not be in env"
        assert {"secret_key", "database_url"} <= set(services[name]["secrets"])
    assert (
        services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    )
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith(
        "/run/secrets/"
    )
    for secret in prod["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def test_production_settings_accept_the_stack(
    prod: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's production guard accepts what this stack gives it: the environment above
    plus the secret files that deploy/compose/init-secrets.sh generates."""
    result = run([str(DEPLOY / "compose" / "init-secrets.sh"), str(tmp_path / "secrets")])
    assert result.returncode == 0, result.stderr
    for name in ("app", "worker", "beat", "migrate"):
        env = prod["services"][name]["environment"]
        assert unknown_settings(set(env)) == set(), name
        settings = settings_from(monkeypatch, env, secrets_dir=tmp_path / "secrets")
        assert settings.is_production
        assert settings.database_url.startswith("postgresql+asyncpg://slipway:")
        assert (
            settings.secret_key.get_secret_value()
            == (tmp_path / "secrets" / "secret_key").read_text()
        )
        assert "api.example.com" in settings.allowed_hosts
        assert settings.keepalive_timeout > 60, "above Nginx's upstream keepalive_timeout"


# --- production: the monitoring files it mounts -----------------------------------------


def test_monitoring_mounts_match_the_monitoring_config(prod: dict[str, Any]) -> None:
    services = prod["services"]
    prometheus_mounts = services["prometheus"]["volumes"]
    assert "./deploy/monitoring:/etc/prometheus:ro" in prometheus_mounts
    config = load_yaml(DEPLOY / "monitoring" / "prometheus.yml")
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for service_name in sd["names"]:
                assert service_name in services, f"{job['job_name']} scrapes {service_name}"
                assert "backend" in services[service_name]["networks"]
    providers = load_yaml(
        DEPLOY / "monitoring" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
    )
    dashboard_path = providers["providers"][0]["options"]["path"]
    grafana_mounts = services["grafana"]["volumes"]
    assert f"./deploy/monitoring/grafana/dashboards:{dashboard_path}:ro" in grafana_mounts
    for mount in prometheus_mounts + grafana_mounts + services["alertmanager"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), f"{mount}: {source} does not exist"


# --- development -----------------------------------------------------------------------


def test_dev_stack_reloads_and_has_its_services(dev: dict[str, Any]) -> None:
    services = dev["services"]
    assert {"app", "db", "redis", "mailpit", "migrate"} <= set(services)
    assert "--reload" in command(services["app"])
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert any(volume.startswith("./src:") for volume in services["app"]["volumes"])
    for service in services.values():
        for port in published(service):
            assert port.startswith("127.0.0.1:"), f"{port}: development ports stay on loopback"


def test_dev_app_points_at_its_services(
    dev: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = dev["services"]
    env = services["app"]["environment"]
    assert unknown_settings(set(env)) == set()
    settings = settings_from(monkeypatch, env)
    db = services["db"]["environment"]
    expected = f"postgresql+asyncpg://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@db:5432/{db['POSTGRES_DB']}"
    assert settings.database_url == expected
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.smtp_host == "mailpit"
    smtp_ports = [port.rsplit(":", 1)[-1] for port in published(services["mailpit"])]
    assert str(settings.smtp_port) in smtp_ports


@pytest.mark.parametrize(
    ("path", "environment"), [(DEV, {}), (PROD, PROD_ENV)], ids=["dev", "prod"]
)
def test_bind_mounts_exist(path: Path, environment: dict[str, str]) -> None:
    """Docker would create a missing source as an empty directory and the service would
    start without its config. Secrets and certificates are made per host (docs)."""
    generated = ("./secrets/", "./deploy/nginx/certs")
    for name, service in compose(path, environment)["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./") and not source.startswith(generated):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    for secret in compose(path, environment).get("secrets", {}).values():
        assert secret["file"].startswith("./secrets/")


def test_dev_source_mount_shadows_the_installed_package(dev: dict[str, Any]) -> None:
    app = dev["services"]["app"]
    (source_mount,) = [volume for volume in app["volumes"] if volume.startswith("./src:")]
    target = source_mount.split(":")[1]
    assert app["environment"]["PYTHONPATH"] == target
    dockerfile = ROOT / "Dockerfile"
    if dockerfile.is_file():
        workdir = re.findall(
            r"^WORKDIR\s+(\S+)", dockerfile.read_text(encoding="utf-8"), re.MULTILINE
        )[-1]
        # --reload watches the working directory, which must contain the mounted source.
        assert target.startswith(workdir.rstrip("/") + "/")
