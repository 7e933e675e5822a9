"""The benchmark suite runs end to end: `benchmarks/run.py --smoke` (the quick subset, one
round of one second, a tiny seed) starts PostgreSQL, Redis, the baselines and Slipway in
production mode, measures every quick scenario and writes the JSON, the Markdown table and
the chart. CI runs it once, as a smoke test: no threshold is set on any timing."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.process import require_or_skip
from tests.support.services import find_postgres_bindir

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN = REPO_ROOT / "benchmarks" / "run.py"

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]

# Every target of issue 9 the quick subset measures, by subject and measure.
EXPECTED_TARGETS = {
    ("health_live", "req/s vs bare_fastapi"),
    ("health_live", "p99 vs bare_fastapi"),
    ("product_cached", "req/s vs bare_fastapi"),
    ("product_uncached", "req/s vs bare_fastapi"),
    ("products_deep_page", "p50 vs products_first_page"),
    ("search_large", "p50 vs search_small"),
    ("order_create", "req/s vs product_uncached"),
    ("order_create", "errors, all rounds"),
    ("live_probe_login_storm", "p99 vs live_probe_idle"),
    ("product_cached_2w", "req/s vs product_cached_1w_unpinned"),
}
EXPECTED_EXTRAS = {"app_import", "cold_start", "rss_after_requests", "rss_growth"}


def _require_tools() -> None:
    # wrk and the servers are installed by the README's test command; the harness also
    # installs wrk itself when it runs as root.
    for tool in ("wrk", "redis-server", "taskset"):
        if shutil.which(tool) is None:
            require_or_skip(f"{tool} is not installed")
    if find_postgres_bindir() is None:
        require_or_skip("PostgreSQL server binaries are not installed")


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_smoke_run_measures_every_quick_scenario_and_writes_the_reports(tmp_path: Path) -> None:
    _require_tools()

    completed = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    (json_path,) = tmp_path.glob("*.json")
    (markdown_path,) = tmp_path.glob("*.md")
    (chart_path,) = tmp_path.glob("*.png")

    document = json.loads(json_path.read_text())
    scenarios = {scenario["name"]: scenario for scenario in document["scenarios"]}
    assert {"bare_fastapi", "health_live", "order_create", "live_probe_login_storm"} <= set(
        scenarios
    )
    for name, scenario in scenarios.items():
        # Every scenario really served requests (a wrong path would be caught as a
        # preflight failure; a dead server as zero requests).
        assert all(round_["requests"] > 0 for round_ in scenario["rounds"]), name
    assert scenarios["live_probe_login_storm"]["background"]["requests_per_second"] > 0
    assert document["meta"]["stack"]["versions"]["postgresql"]
    assert document["meta"]["loadavg_start"]

    targets = {(target["subject"], target["measure"]) for target in document["targets"]}
    assert targets >= EXPECTED_TARGETS
    assert {extra["name"] for extra in document["extras"]} == EXPECTED_EXTRAS
    assert all(extra["value"] > 0 for extra in document["extras"] if extra["name"] != "rss_growth")

    markdown = markdown_path.read_text()
    assert "## Targets" in markdown
    assert "| health_live |" in markdown
    assert "cold_start" in markdown

    width, height = _png_size(chart_path)
    assert width >= 800
    assert height >= 600
