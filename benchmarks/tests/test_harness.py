"""The parts of the harness that turn wrk output into figures: a wrong parse is a wrong ratio."""

from __future__ import annotations

import pytest
from bench import registry, report, wrk
from bench.model import Sample, WrkResult

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
    names = [s.name for s in registry.resolve(["slipway_health_live"], quick=False)]

    assert names == ["bare_fastapi", "slipway_health_live"]


def test_resolve_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="nope"):
        registry.resolve(["nope"], quick=False)


def _sample(name: str, round_: int, rps: float, p99: float, cpu: float = 100.0) -> Sample:
    result = WrkResult(rps, 1.0, p99, int(rps), 0, 0, 1.0)
    return Sample(scenario=name, round=round_, wrk=result, server_cpu_pct=cpu)


def test_ratios_are_medians_of_same_round_ratios() -> None:
    scenarios = registry.resolve(["slipway_health_live"], quick=False)
    # The machine halves its speed in round 2 and round 3 is an outlier: the same-round ratios
    # are 0.9, 0.9, 0.5 and their median ignores both the drift and the outlier.
    samples = [
        _sample("bare_fastapi", 1, 1000, 10),
        _sample("slipway_health_live", 1, 900, 12),
        _sample("bare_fastapi", 2, 500, 20),
        _sample("slipway_health_live", 2, 450, 24),
        _sample("bare_fastapi", 3, 1000, 10),
        _sample("slipway_health_live", 3, 500, 30),
    ]

    summaries = {s.scenario.name: s for s in report.summarise(scenarios, samples)}
    slipway = summaries["slipway_health_live"]

    assert slipway.throughput_ratio == pytest.approx(0.9)
    assert slipway.p99_ratio == pytest.approx(1.2)
    assert slipway.target_met is True
    assert summaries["bare_fastapi"].throughput_ratio is None


def test_a_missed_target_is_reported_as_missed() -> None:
    scenarios = registry.resolve(["slipway_health_live"], quick=False)
    samples = [_sample("bare_fastapi", 1, 1000, 10), _sample("slipway_health_live", 1, 700, 10)]

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
