"""The real Prometheus (Debian's `prometheus` binary) scrapes a running Slipway with the
repository's configuration (deploy/monitoring/prometheus.yml): the target is up through the
bearer token, `http_requests_total` for a route rises as requests arrive, and the
repository's recording rules evaluate on the app's real metrics."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import SlipwayServer, slipway_env, start_server
from tests.support.ports import LOOPBACK, free_port, wait_until
from tests.support.process import ManagedProcess, ensure_binary, require_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ROUTE = "/_test/observability/items/{item_id}"
TOKEN = "prometheus-scrape-token-" + "s" * 16


def derived_config(directory: Path, app_port: int) -> Path:
    """deploy/monitoring/prometheus.yml pointed at the test app: static target instead of
    Compose DNS, the bearer token enabled, 1 s intervals, no Alertmanager or other jobs."""
    config: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config.pop("alerting", None)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "slipway"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [f"{LOOPBACK}:{app_port}"]}]
    token_file = directory / "metrics_token"
    token_file.write_text(TOKEN)
    job["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    config["scrape_configs"] = [job]
    # rule_files are relative to the configuration file: keep them next to it.
    shutil.copytree(MONITORING / "rules", directory / "rules")
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[SlipwayServer]:
    env = slipway_env(
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'scrape.db'}",
        METRICS_EXPOSURE="token",
        METRICS_TOKEN=TOKEN,
    )
    server = start_server(tmp_path, env)
    yield server
    server.process.close()


@pytest.fixture
def prometheus(tmp_path: Path, app_server: SlipwayServer) -> Iterator[str]:
    binary = ensure_binary("prometheus", "prometheus")
    if binary is None:
        require_or_skip("the prometheus binary is not installed (apt-get install prometheus)")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    config = derived_config(directory, app_server.port)
    port = free_port()
    process = ManagedProcess(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address={LOOPBACK}:{port}",
            f"--storage.tsdb.path={directory / 'data'}",
        ],
        name="prometheus",
        cwd=directory,
    )
    process.start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        process.wait_for_http(f"{url}/-/ready", timeout=60)
        yield url
    finally:
        process.close()


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def scalar(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_app_with_the_repository_config(
    prometheus: str, app_server: SlipwayServer
) -> None:
    def target_up() -> bool:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
        active = targets["data"]["activeTargets"]
        return any(t["labels"]["job"] == "slipway" and t["health"] == "up" for t in active)

    wait_until(target_up, timeout=30, what="the slipway target is up")
    assert scalar(prometheus, 'up{job="slipway"}') == 1

    series = f'sum(http_requests_total{{job="slipway", route="{ROUTE}"}})'
    for item in range(5):
        assert httpx.get(app_server.url(f"/_test/observability/items/{item}")).status_code == 200
    wait_until(
        lambda: (scalar(prometheus, series) or 0) >= 5, timeout=30, what="first requests seen"
    )
    first = scalar(prometheus, series)
    assert first == 5

    for item in range(7):
        httpx.get(app_server.url(f"/_test/observability/items/{item}"))
    wait_until(
        lambda: scalar(prometheus, series) == first + 7, timeout=30, what="the counter rises"
    )

    # Only the route template is a label: no raw paths reached Prometheus.
    routes = {r["metric"]["route"] for r in query(prometheus, 'http_requests_total{job="slipway"}')}
    assert ROUTE in routes
    assert not [route for route in routes if "/items/" in route and "{" not in route]

    # The repository's recording rules evaluate on the app's real series.
    wait_until(
        lambda: scalar(prometheus, 'job:http_requests:rate5m{job="slipway"}') is not None,
        timeout=30,
        what="the request-rate recording rule",
    )
    wait_until(
        lambda: scalar(prometheus, 'min(health_ready{job="slipway"})') == 1,
        timeout=30,
        what="the readiness gauge",
    )
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert rules, "the repository's rule files were not loaded"
    health = [
        rule
        for group in rules
        for rule in group["rules"]
        if rule.get("health") not in (None, "ok", "unknown")
    ]
    assert not health, health


def test_the_derived_config_passes_promtool(tmp_path: Path) -> None:
    promtool = ensure_binary("promtool", "prometheus")
    if promtool is None:
        require_or_skip("promtool is not installed (apt-get install prometheus)")
    config = derived_config(tmp_path, 8000)
    result = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
