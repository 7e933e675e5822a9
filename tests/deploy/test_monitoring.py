"""The monitoring files under deploy/monitoring, checked with the real Prometheus tools.

promtool comes from Debian's `prometheus` package; amtool and the alertmanager binary from
`prometheus-alertmanager`. Without them these tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
RULES_FILE = MONITORING / "rules" / "slipway.rules.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = MONITORING / "alertmanager.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "slipway.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DOCS = ROOT / "docs" / "operations" / "monitoring.md"

pytestmark = pytest.mark.deploy

TOOL_TIMEOUT = 120

# The metric contract with slipway.platform.metrics (docs/operations/monitoring.md).
COUNTERS = {
    "http_requests_total",
    "cache_hits_total",
    "cache_misses_total",
    "cache_errors_total",
    "rate_limit_rejections_total",
    "jobs_enqueued_total",
    "jobs_started_total",
    "jobs_succeeded_total",
    "jobs_failed_total",
    "jobs_retried_total",
    "worker_starts_total",
}
GAUGES = {
    "http_requests_in_flight",
    "db_pool_size",
    "db_pool_checked_out",
    "db_pool_overflow",
    "websocket_connections",
    "slipway_build_info",
    "health_ready",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    # Written by Prometheus itself for every target.
    "up",
}
HISTOGRAMS = {
    "http_request_duration_seconds",
    "db_pool_wait_seconds",
    "job_run_duration_seconds",
    "job_queue_wait_seconds",
}
KNOWN_METRICS = (
    COUNTERS
    | GAUGES
    | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_count", "_sum")}
)
# prometheus_client's default buckets: the "0.005..10" of the metric contract.
HTTP_DURATION_BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

EXPECTED_PANELS = {
    "Request rate",
    "Error rate",
    "Latency p50 by route",
    "Latency p95 by route",
    "Latency p99 by route",
    "DB pool utilisation",
    "Cache hit ratio",
    "Job throughput",
    "Job failures and retries",
    "Worker restarts",
    "Memory per worker",
}
SEVERITY_RECEIVERS = {"critical": "pager,team-email", "warning": "tickets"}

# Grafana's own variables, replaced by representative values so promtool can parse queries.
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_tool("amtool", "prometheus-alertmanager")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False, cwd=ROOT
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Rule:
    group: str
    name: str
    is_alert: bool
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def load_rules() -> list[Rule]:
    rules = []
    for group in load_yaml(RULES_FILE)["groups"]:
        for rule in group["rules"]:
            rules.append(
                Rule(
                    group=group["name"],
                    name=rule.get("alert") or rule["record"],
                    is_alert="alert" in rule,
                    expr=rule["expr"],
                    labels=rule.get("labels", {}),
                    annotations=rule.get("annotations", {}),
                )
            )
    return rules


def alerts() -> list[Rule]:
    return [rule for rule in load_rules() if rule.is_alert]


def recorded_names() -> set[str]:
    return {rule.name for rule in load_rules() if not rule.is_alert}


def referenced_metrics(expr: str) -> set[str | None]:
    """Every metric name a PromQL expression selects; None for a selector without one."""
    names: set[str | None] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def promtool_check_expressions(
    promtool: str, expressions: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Parses expressions with promtool: it has no expression checker, so each becomes a rule."""
    rules = [{"record": name, "expr": expr} for name, expr in expressions.items()]
    path = tmp_path / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    return run(promtool, "check", "rules", "--lint=none", str(path))


# Prometheus configuration and rules


def test_prometheus_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    # promtool also checks every rule file the config's rule_files glob finds.
    assert str(RULES_FILE) in result.stdout
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_prometheus_scrapes_the_app_and_the_worker_and_alerts_alertmanager() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"slipway", "slipway-worker"} <= jobs.keys()
    for name in ("slipway", "slipway-worker"):
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    alertmanagers = config["alerting"]["alertmanagers"]
    assert any(am["static_configs"][0]["targets"] for am in alertmanagers)
    globbed = {p for pattern in config["rule_files"] for p in MONITORING.glob(pattern)}
    assert globbed == {RULES_FILE}


def test_rules_pass_promtool_check_with_lint(promtool: str) -> None:
    result = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE))

    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/monitoring/tests"

    result = run(promtool, "test", "rules", *map(str, RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_unit_tested_both_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        spec = load_yaml(path)
        assert spec["rule_files"] == ["../rules/slipway.rules.yml"], path
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])

    names = {alert.name for alert in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests name alerts that do not exist"


def test_alerts_cover_the_required_conditions() -> None:
    exprs = {alert.name: alert.expr for alert in alerts()}

    def alert_using(*needles: str) -> list[str]:
        return [name for name, expr in exprs.items() if all(n in expr for n in needles)]

    assert alert_using("job:http_requests_5xx:ratio_rate5m")
    assert alert_using("ratio_rate1h", "ratio_rate5m", "14.4")
    assert alert_using("ratio_rate6h", "ratio_rate30m", "6 *")
    assert alert_using("up{")
    assert alert_using("health_ready")
    assert alert_using("slipway:db_pool_utilisation:ratio", "0.9")
    assert alert_using("job_kind:jobs_failure:ratio_rate15m")
    assert alert_using("job_instance:worker_starts:increase10m")
    assert alert_using("predict_linear(process_resident_memory_bytes")


def test_alerts_are_routable_and_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for alert in alerts():
        assert alert.labels.get("severity") in SEVERITY_RECEIVERS, alert.name
        assert alert.annotations.get("summary"), alert.name
        assert alert.annotations.get("description"), alert.name
        anchor = alert.name.lower()
        assert alert.annotations.get("runbook") == f"docs/operations/monitoring.md#{anchor}"
        # GitHub derives the anchor from the heading text.
        assert re.search(rf"^#+ {alert.name}$", docs, re.MULTILINE), f"{alert.name} undocumented"


def test_rules_reference_only_contract_metrics() -> None:
    allowed = KNOWN_METRICS | recorded_names()
    for rule in load_rules():
        names = referenced_metrics(rule.expr)
        assert names <= allowed, f"{rule.name}: {names - allowed}"


def test_latency_slo_threshold_is_the_bucket_the_sli_counts() -> None:
    rules = {rule.name: rule for rule in load_rules()}
    threshold = float(
        re.fullmatch(r"vector\((.+)\)", rules["slipway:slo_latency:threshold_seconds"].expr)[1]  # type: ignore[index]
    )
    objective = float(
        re.fullmatch(r"vector\((.+)\)", rules["slipway:slo_latency:objective"].expr)[1]  # type: ignore[index]
    )
    sli_rules = [r for r in rules.values() if r.name.startswith("job:slo_latency_slow_requests:")]

    assert {r.name.rsplit(":", 1)[1] for r in sli_rules} == {
        "ratio_rate5m",
        "ratio_rate30m",
        "ratio_rate1h",
        "ratio_rate6h",
    }
    for rule in sli_rules:
        assert {float(le) for le in re.findall(r'le="([^"]+)"', rule.expr)} == {threshold}
    assert threshold in HTTP_DURATION_BUCKETS
    assert 0 < objective < 1


def test_promtool_expression_check_rejects_invalid_promql(promtool: str, tmp_path: Path) -> None:
    ok = promtool_check_expressions(promtool, {"check:ok": "sum(rate(up[5m]))"}, tmp_path)
    bad = promtool_check_expressions(promtool, {"check:bad": "sum(rate(up[5m])"}, tmp_path)

    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bad.returncode != 0


# Alertmanager


def test_alertmanager_config_passes_amtool(amtool: str) -> None:
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("severity", "receivers"), sorted(SEVERITY_RECEIVERS.items()))
def test_alertmanager_routes_by_severity(amtool: str, severity: str, receivers: str) -> None:
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receivers}",
        "alertname=SlipwayExample",
        f"severity={severity}",
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_structure() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)

    receivers = {receiver["name"] for receiver in config["receivers"]}

    def route_receivers(route: dict[str, Any]) -> Iterator[str]:
        yield route["receiver"]
        for child in route.get("routes", []):
            yield from route_receivers(child)

    assert set(route_receivers(config["route"])) <= receivers
    routed = {
        matcher for child in config["route"]["routes"] for matcher in child.get("matchers", [])
    }
    for severity in {alert.labels["severity"] for alert in alerts()}:
        assert f'severity="{severity}"' in routed
    assert config["inhibit_rules"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def alertmanager_url(amtool: str, tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Empty disables the gossip cluster, which would otherwise listen on 0.0.0.0:9094.
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "alertmanager did not start: "
                    + (tmp_path / "alertmanager.log").read_text(encoding="utf-8")
                )
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.integration
def test_alertmanager_inhibits_symptoms_of_a_known_cause(alertmanager_url: str) -> None:
    now = datetime.now(UTC).isoformat()

    def alert(name: str, severity: str, job: str, **labels: str) -> dict[str, str]:
        return {"alertname": name, "severity": severity, "job": job, **labels}

    posted = {
        # A target that cannot be scraped holds back every other alert of that target.
        "down": alert("SlipwayTargetDown", "critical", "a", instance="a:1"),
        "not-ready-of-down": alert("SlipwayNotReady", "critical", "a", instance="a:1"),
        "pool-of-down": alert("SlipwayDBPoolSaturated", "warning", "a", instance="a:1"),
        "pool-elsewhere": alert("SlipwayDBPoolSaturated", "warning", "a", instance="a:2"),
        # A not-ready instance holds back its job's 5xx and latency alerts.
        "not-ready": alert("SlipwayNotReady", "critical", "b", instance="b:1"),
        "errors-of-not-ready": alert("SlipwayHighErrorRatio", "critical", "b"),
        "errors-elsewhere": alert("SlipwayHighErrorRatio", "critical", "c"),
        # The fast burn holds back the slow burn of the same job.
        "fast": alert("SlipwayLatencySLOFastBurn", "critical", "d", slo="http-latency"),
        "slow": alert("SlipwayLatencySLOSlowBurn", "warning", "d", slo="http-latency"),
        "slow-alone": alert("SlipwayLatencySLOSlowBurn", "warning", "e", slo="http-latency"),
    }
    body = json.dumps(
        [{"labels": {**labels, "case": case}, "startsAt": now} for case, labels in posted.items()]
    ).encode()
    request = urllib.request.Request(
        f"{alertmanager_url}/api/v2/alerts",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200

    expected_inhibited = {"not-ready-of-down", "pool-of-down", "errors-of-not-ready", "slow"}
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(f"{alertmanager_url}/api/v2/alerts", timeout=5) as response:
            states = {
                alert["labels"]["case"]: alert["status"]["state"] for alert in json.load(response)
            }
        inhibited = {case for case, state in states.items() if state == "suppressed"}
        if (states.keys() == posted.keys() and inhibited == expected_inhibited) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.2)

    assert states.keys() == posted.keys()
    assert inhibited == expected_inhibited


# Grafana


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def panel_queries() -> dict[str, str]:
    """Every panel query keyed by a rule-safe name, Grafana variables substituted."""
    variables: dict[str, str] = {
        variable["name"]: variable.get("allValue", ".*")
        for variable in dashboard()["templating"]["list"]
    } | GRAFANA_INTERVALS

    def substitute(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in variables, f"undefined dashboard variable ${name}"
        return variables[name]

    queries = {}
    for panel in query_panels():
        for target in panel["targets"]:
            expr = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", substitute, target["expr"])
            queries[f"dashboard:panel_{panel['id']}_{target['refId']}"] = expr
    return queries


def test_grafana_datasource_is_provisioned_with_a_fixed_uid() -> None:
    datasources = load_yaml(DATASOURCES)

    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["uid"] == "slipway-prometheus"
    assert prometheus["url"].startswith("http://")


def test_grafana_dashboards_are_provisioned_from_files() -> None:
    providers = load_yaml(DASHBOARD_PROVIDERS)

    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    assert provider["allowUiUpdates"] is False


def test_dashboard_structure() -> None:
    data = dashboard()
    datasource_uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]

    assert data["uid"]
    assert data["title"]
    assert isinstance(data["schemaVersion"], int)
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == datasource_uid
    for panel in query_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource_uid}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_has_every_expected_panel() -> None:
    titles = [panel["title"] for panel in query_panels()]

    assert set(titles) >= EXPECTED_PANELS
    assert len(titles) == len(set(titles)), "duplicate panel titles"


def test_dashboard_latency_panels_show_their_quantile_by_route() -> None:
    panels = {panel["title"]: panel for panel in query_panels()}
    for title, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
        (target,) = panels[f"Latency {title} by route"]["targets"]
        assert target["expr"].startswith(f"histogram_quantile({quantile}, sum by (route, le)")


def test_dashboard_queries_parse_with_promtool(promtool: str, tmp_path: Path) -> None:
    queries = panel_queries()

    result = promtool_check_expressions(promtool, queries, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_queries_reference_only_contract_metrics() -> None:
    allowed = KNOWN_METRICS | recorded_names()
    variable_queries = [variable["definition"] for variable in dashboard()["templating"]["list"]]
    selectors = [
        re.fullmatch(r"label_values\((.+), \w+\)", query)[1]  # type: ignore[index]
        for query in variable_queries
    ]
    for name, expr in [*panel_queries().items(), *zip(variable_queries, selectors, strict=True)]:
        names = referenced_metrics(expr)
        assert names <= allowed, f"{name}: {names - allowed}"
