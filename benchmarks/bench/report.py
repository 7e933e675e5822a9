"""Turning samples into medians and same-round ratios, then into a table, Markdown and JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from .model import Sample, Scenario

# A single-worker server under saturating load should use its whole core. Well below that,
# something else (other processes on a shared machine, or a starved load generator) set the pace.
CONTENDED_BELOW_PCT = 85.0


@dataclass
class Summary:
    scenario: Scenario
    samples: list[Sample]
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    server_cpu_pct: float
    client_cpu_pct: float
    requests_per_cpu_second: float
    # Medians of ratios taken within each round: the machine drifts between rounds, not within.
    throughput_ratio: float | None
    p99_ratio: float | None
    efficiency_ratio: float | None

    @property
    def contended(self) -> bool:
        return self.server_cpu_pct < CONTENDED_BELOW_PCT

    @property
    def target_met(self) -> bool | None:
        target = self.scenario.target
        if target is None or self.throughput_ratio is None or self.p99_ratio is None:
            return None
        met = True
        if target.min_throughput_ratio is not None:
            met &= self.throughput_ratio >= target.min_throughput_ratio
        if target.max_p99_ratio is not None:
            met &= self.p99_ratio <= target.max_p99_ratio
        return met


def _same_round_ratio(
    own: Sequence[Sample],
    baseline: str | None,
    by_key: dict[tuple[str, int], Sample],
    metric: Callable[[Sample], float],
) -> float | None:
    if baseline is None:
        return None
    ratios = []
    for sample in own:
        base = by_key.get((baseline, sample.round))
        if base is not None and metric(base) > 0:
            ratios.append(metric(sample) / metric(base))
    return statistics.median(ratios) if ratios else None


def summarise(scenarios: Sequence[Scenario], samples: Sequence[Sample]) -> list[Summary]:
    by_key = {(sample.scenario, sample.round): sample for sample in samples}
    summaries = []
    for scenario in scenarios:
        own = sorted((s for s in samples if s.scenario == scenario.name), key=lambda s: s.round)
        if not own:
            continue

        summaries.append(
            Summary(
                scenario=scenario,
                samples=own,
                rps=statistics.median(s.wrk.requests_per_second for s in own),
                p50_ms=statistics.median(s.wrk.p50_ms for s in own),
                p99_ms=statistics.median(s.wrk.p99_ms for s in own),
                errors=sum(s.wrk.errors for s in own),
                rss_mb=own[-1].rss_per_worker_mb,
                server_cpu_pct=statistics.median(s.server_cpu_pct for s in own),
                client_cpu_pct=statistics.median(s.client_cpu_pct for s in own),
                requests_per_cpu_second=statistics.median(s.requests_per_cpu_second for s in own),
                throughput_ratio=_same_round_ratio(
                    own, scenario.baseline, by_key, lambda s: s.wrk.requests_per_second
                ),
                p99_ratio=_same_round_ratio(own, scenario.baseline, by_key, lambda s: s.wrk.p99_ms),
                efficiency_ratio=_same_round_ratio(
                    own, scenario.baseline, by_key, lambda s: s.requests_per_cpu_second
                ),
            )
        )
    return summaries


def _ratio(value: float | None, *, reference: bool) -> str:
    if reference:
        return "1.00x (ref)"
    return "—" if value is None else f"{value:.2f}x"


def _verdict(summary: Summary) -> str:
    if summary.scenario.target is None:
        return ""
    met = summary.target_met
    state = "n/a" if met is None else ("met" if met else "MISSED")
    return f"{summary.scenario.target.describe()}: {state}"


HEADERS = (
    "scenario",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "RSS MB",
    "srv CPU",
    "wrk CPU",
    "req/CPU-s",
    "rps ratio",
    "p99 ratio",
    "req/CPU-s ratio",
    "target",
)


def _rows(summaries: Sequence[Summary]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for summary in summaries:
        reference = summary.scenario.baseline is None
        rows.append(
            (
                summary.scenario.name,
                f"{summary.rps:,.0f}",
                f"{summary.p50_ms:.2f}",
                f"{summary.p99_ms:.2f}",
                str(summary.errors),
                f"{summary.rss_mb:.1f}",
                f"{summary.server_cpu_pct:.0f}%",
                f"{summary.client_cpu_pct:.0f}%",
                f"{summary.requests_per_cpu_second:,.0f}",
                _ratio(summary.throughput_ratio, reference=reference),
                _ratio(summary.p99_ratio, reference=reference),
                _ratio(summary.efficiency_ratio, reference=reference),
                _verdict(summary),
            )
        )
    return rows


def rich_table(summaries: Sequence[Summary], title: str) -> Table:
    table = Table(title=title)
    for index, header in enumerate(HEADERS):
        table.add_column(
            header,
            justify="left" if index in (0, len(HEADERS) - 1) else "right",
            no_wrap=index == 0,
        )
    for row, summary in zip(_rows(summaries), summaries, strict=True):
        met = summary.target_met
        style = None if met is None else ("green" if met else "bold red")
        table.add_row(*row, style=style)
    return table


def warnings(summaries: Sequence[Summary]) -> list[str]:
    notes = []
    contended = [summary.scenario.name for summary in summaries if summary.contended]
    if contended:
        notes.append(
            f"the server used less than {CONTENDED_BELOW_PCT:.0f}% of its core in "
            f"{', '.join(contended)}: other processes or a starved wrk set the pace, so "
            "throughput and latency ratios are unreliable. Compare req/CPU-s ratios, or rerun "
            "on a quiet machine."
        )
    errors = [f"{s.scenario.name} ({s.errors})" for s in summaries if s.errors]
    if errors:
        notes.append(f"errors (status >= 400 or socket errors): {', '.join(errors)}.")
    return notes


def markdown(summaries: Sequence[Summary], meta: dict[str, Any]) -> str:
    lines = [
        f"# Slipway benchmark, {meta['timestamp']}",
        "",
        (
            f"wrk `-t{meta['threads']} -c{meta['connections']} -d{meta['duration_s']}s`, "
            f"{meta['rounds']} interleaved rounds, medians shown; server on core "
            f"{meta['server_cpus']}, wrk on core {meta['client_cpus']}. Load average at "
            f"start {meta['loadavg_start'][0]:.2f}, at end {meta['loadavg_end'][0]:.2f}."
        ),
        "",
        (
            "Ratios divide each scenario by its baseline within the same round, then take the "
            "median. Absolute figures drift on a shared machine; quote the ratios. CPU columns "
            "are the share of one core used under load. req/CPU-s is throughput per second of "
            "server CPU, the cost of a request, which other load on the machine distorts less."
        ),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "| "
        + " | ".join("---" if i in (0, len(HEADERS) - 1) else "---:" for i in range(len(HEADERS)))
        + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(summaries)]
    notes = warnings(summaries)
    if notes:
        lines += ["", *[f"**Warning:** {note}" for note in notes]]
    if meta.get("skipped"):
        lines += ["", "Skipped:"]
        lines += [f"- `{item['name']}`: {item['reason']}" for item in meta["skipped"]]
    return "\n".join(lines) + "\n"


def to_json(summaries: Sequence[Summary], meta: dict[str, Any], servers: dict[str, Any]) -> str:
    document = {
        "meta": meta,
        "servers": servers,
        "scenarios": [
            {
                "name": summary.scenario.name,
                "description": summary.scenario.description,
                "server": summary.scenario.server,
                "path": summary.scenario.path,
                "lua_script": summary.scenario.lua_script,
                "baseline": summary.scenario.baseline,
                "is_baseline": summary.scenario.is_baseline,
                "target": asdict(summary.scenario.target) if summary.scenario.target else None,
                "target_met": summary.target_met,
                "median": {
                    "requests_per_second": round(summary.rps, 2),
                    "p50_ms": round(summary.p50_ms, 3),
                    "p99_ms": round(summary.p99_ms, 3),
                },
                "errors_total": summary.errors,
                "rss_per_worker_mb": summary.rss_mb,
                "server_cpu_pct": summary.server_cpu_pct,
                "client_cpu_pct": summary.client_cpu_pct,
                "requests_per_cpu_second": round(summary.requests_per_cpu_second, 1),
                "contended": summary.contended,
                "ratios": {
                    "throughput": _round(summary.throughput_ratio),
                    "p99": _round(summary.p99_ratio),
                    "requests_per_cpu_second": _round(summary.efficiency_ratio),
                },
                "rounds": [
                    {
                        "round": sample.round,
                        **asdict(sample.wrk),
                        "errors": sample.wrk.errors,
                        "loadavg_1m": sample.loadavg_1m,
                        "server_cpu_pct": sample.server_cpu_pct,
                        "client_cpu_pct": sample.client_cpu_pct,
                        "requests_per_cpu_second": round(sample.requests_per_cpu_second, 1),
                        "rss_per_worker_mb": sample.rss_per_worker_mb,
                        "processes": [asdict(process) for process in sample.memory],
                    }
                    for sample in summary.samples
                ],
            }
            for summary in summaries
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
