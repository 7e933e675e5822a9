"""The parts of the harness that turn wrk output into figures: a wrong parse is a wrong ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bench.model import Sample, Scenario, Target, WrkResult

from bench import chart, extras, registry, report, wrk

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:40000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms  700.00us  30.12ms   91.00%
    Req/Sec    24.50k     1.20k   26.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    2.70ms
     90%    3.10ms
     99%    1.20s
  122000 requests in 5.01s, 17.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  24351.30
Transfer/sec:      3.39MB
"""


def test_parse_converts_every_latency_unit_to_milliseconds() -> None:
    result = wrk.parse(WRK_OUTPUT)

    assert result.requests_per_second == pytest.approx(24351.30)
    assert result.p50_ms == pytest.approx(0.85)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.requests == 122000
    assert result.duration_s == pytest.approx(5.01)


def test_parse_counts_error_statuses_and_socket_errors() -> None:
    result = wrk.parse(WRK_OUTPUT)

    assert result.non_2xx_3xx == 5
    assert result.socket_errors == 7
    assert result.errors == 12


def test_parse_without_errors_reports_zero() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )

    assert wrk.parse(clean).errors == 0


def test_parse_rejects_output_without_latency_distribution() -> None:
    with pytest.raises(wrk.HarnessError, match="could not parse"):
        wrk.parse("Requests/sec: 10.0\n  10 requests in 1.00s, 1KB read\n")


def test_resolve_adds_the_baseline_a_requested_scenario_divides_by() -> None:
    names = [s.name for s in registry.resolve(["health_live"], quick=False)]

    assert names == ["bare_fastapi", "health_live"]


def test_resolve_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="nope"):
        registry.resolve(["nope"], quick=False)


def _sample(
    name: str,
    round_: int,
    rps: float,
    p99: float,
    cpu: float = 100.0,
    *,
    p50: float = 1.0,
    errors: int = 0,
) -> Sample:
    result = WrkResult(rps, p50, p99, int(rps), errors, 0, 1.0)
    return Sample(scenario=name, round=round_, wrk=result, server_cpu_pct=cpu)


def test_ratios_are_medians_of_same_round_ratios() -> None:
    scenarios = registry.resolve(["health_live"], quick=False)
    # The machine halves its speed in round 2 and round 3 is an outlier: the same-round ratios
    # are 0.9, 0.9, 0.5 and their median ignores both the drift and the outlier.
    samples = [
        _sample("bare_fastapi", 1, 1000, 10),
        _sample("health_live", 1, 900, 12),
        _sample("bare_fastapi", 2, 500, 20),
        _sample("health_live", 2, 450, 24),
        _sample("bare_fastapi", 3, 1000, 10),
        _sample("health_live", 3, 500, 30),
    ]

    summaries = {s.scenario.name: s for s in report.summarise(scenarios, samples)}
    slipway = summaries["health_live"]

    assert slipway.throughput_ratio == pytest.approx(0.9)
    assert slipway.p99_ratio == pytest.approx(1.2)
    assert slipway.target_met is True
    assert summaries["bare_fastapi"].throughput_ratio is None


def test_a_missed_target_is_reported_as_missed() -> None:
    scenarios = registry.resolve(["health_live"], quick=False)
    samples = [_sample("bare_fastapi", 1, 1000, 10), _sample("health_live", 1, 700, 10)]

    slipway = report.summarise(scenarios, samples)[1]

    assert slipway.target_met is False
    assert "MISSED" in report.markdown(
        [slipway],
        {
            "timestamp": "t",
            "threads": 1,
            "connections": 64,
            "duration_s": 1,
            "rounds": 1,
            "server_cpus": "1",
            "client_cpus": "0",
            "loadavg_start": (0.0,),
            "loadavg_end": (0.0,),
        },
    )


def test_cpu_normalised_throughput_discounts_a_server_starved_of_its_core() -> None:
    starved = _sample("bare_fastapi", 1, 500, 10, cpu=50.0)

    assert starved.requests_per_cpu_second == pytest.approx(1000.0)


def test_resolve_adds_baselines_of_baselines() -> None:
    names = [s.name for s in registry.resolve(["products_deep_page"], quick=False)]

    assert names == ["bare_fastapi", "products_first_page", "products_deep_page"]


def test_quick_subset_holds_every_ratio_target_of_the_issue() -> None:
    quick = {s.name for s in registry.resolve(None, quick=True)}

    assert {
        "health_live",
        "product_cached",
        "product_uncached",
        "products_deep_page",
        "search_large",
        "order_create",
        "live_probe_login_storm",
        "product_cached_2w",
    } <= quick
    assert "nginx_static" not in quick


def test_latency_and_error_targets_are_checked_separately() -> None:
    deep = Scenario(
        name="deep",
        server="s",
        path="/",
        description="",
        baseline="first",
        target=Target(max_p50_ratio=1.5, max_errors=0),
    )
    first = Scenario(name="first", server="s", path="/", description="")
    samples = [
        _sample("first", 1, 100, 10, p50=4.0),
        _sample("deep", 1, 90, 10, p50=5.0, errors=2),
    ]

    summary = report.summarise([first, deep], samples)[1]
    checks = {check.measure: check for check in summary.checks()}

    assert summary.p50_ratio == pytest.approx(1.25)
    assert checks["p50 vs first"].met is True
    assert checks["errors, all rounds"].met is False
    assert summary.target_met is False


def test_background_load_is_summarised_with_the_scenario() -> None:
    scenarios = registry.resolve(["live_probe_login_storm"], quick=False)
    storm = WrkResult(6.0, 900.0, 1500.0, 60, 0, 0, 10.0)
    samples = [
        _sample("live_probe_idle", 1, 150, 4.0),
        _sample("live_probe_login_storm", 1, 140, 10.0),
    ]
    samples[1].background = storm

    summary = report.summarise(scenarios, samples)[1]

    assert summary.p99_ratio == pytest.approx(2.5)
    assert summary.target_met is True
    assert summary.background == {
        "requests_per_second": 6.0,
        "p50_ms": 900.0,
        "p99_ms": 1500.0,
        "errors": 0,
    }
    assert "6.0 req/s" in report.background_notes([summary])[0]


def test_extras_become_targets_after_the_scenarios() -> None:
    extra = extras.ExtraResult("cold_start", "start to ready", 2.5, "s", 2.0, label="start")

    found = report.checks([], [extra])

    assert [(c.subject, c.goal, c.achieved_text, c.status) for c in found] == [
        ("cold_start", "≤ 2s", "2.5 s", "MISSED")
    ]


def test_goal_fraction_is_one_or_more_exactly_when_met() -> None:
    at_least = report.Check("a", "rps", "≥", 0.8, 0.4, "x")
    at_most = report.Check("b", "p99", "≤", 1.5, 1.0, "x")
    no_errors = report.Check("c", "errors", "≤", 0, 0.0, "")

    assert chart.goal_fraction(at_least) == pytest.approx(0.5)
    assert chart.goal_fraction(at_most) == pytest.approx(1.5)
    assert chart.goal_fraction(no_errors) == 1.0
    assert chart.goal_fraction(report.Check("c", "errors", "≤", 0, 3.0, "")) == 0.0


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      3000 |      50000 | sqlalchemy
import time:     40000 |      40000 |   sqlalchemy.orm
import time:      2000 |       2000 |     pydantic.main
import time:       500 |     100000 | slipway.app
"""


def test_import_time_is_grouped_by_top_level_package() -> None:
    rows = extras.heaviest_imports(IMPORTTIME)

    assert rows[0] == {"package": "sqlalchemy", "self_ms": 43.0}
    assert {"package": "pydantic", "self_ms": 2.0} in rows


def test_wrk_command_pins_and_applies_the_timeout() -> None:
    command = wrk.build_command(
        "/usr/bin/wrk",
        "http://127.0.0.1:1/",
        duration_s=2.4,
        connections=8,
        threads=1,
        cpus="0",
        lua_script=None,
        timeout_s=10,
    )

    assert command[:3] == ["taskset", "-c", "0"]
    assert "-d2s" in command
    assert command[command.index("--timeout") + 1] == "10s"


def test_a_broken_scenario_file_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "benchmarks"
    (broken / "bench").mkdir(parents=True)
    (broken / "scenarios_servers.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.setattr(registry, "EXTENSIONS", ("scenarios_servers",))
    monkeypatch.setattr(registry, "EXTENSION_PROBLEMS", {})
    monkeypatch.setattr(registry, "__file__", str(broken / "bench" / "registry.py"))
    monkeypatch.delitem(sys.modules, "scenarios_servers", raising=False)
    monkeypatch.syspath_prepend(str(broken))
    before = dict(registry.SCENARIOS)

    registry._load_extensions()

    assert "half written" in registry.EXTENSION_PROBLEMS["scenarios_servers"]
    assert before == registry.SCENARIOS
