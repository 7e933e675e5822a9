"""Turning samples into medians and same-round ratios, then into a table, Markdown and JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from .extras import ExtraResult
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
    p50_ratio: float | None = None
    server_cores: int = 1
    background: dict[str, float] | None = None

    @property
    def contended(self) -> bool:
        # Only meaningful for a server pinned to one core under saturating load; a paced
        # probe or a server spread over every core is not expected to fill one core.
        if self.server_cores != 1 or self.scenario.lua_script == "probe.lua":
            return False
        return self.server_cpu_pct < CONTENDED_BELOW_PCT

    def checks(self) -> list[Check]:
        """Each criterion of the scenario's target, with the figure achieved."""
        target = self.scenario.target
        if target is None:
            return []
        baseline = self.scenario.baseline or "?"
        found: list[Check] = []
        if target.min_throughput_ratio is not None:
            found.append(
                Check(
                    self.scenario.name,
                    f"req/s vs {baseline}",
                    "≥",
                    target.min_throughput_ratio,
                    self.throughput_ratio,
                    "x",
                )
            )
        if target.max_p50_ratio is not None:
            found.append(
                Check(
                    self.scenario.name,
                    f"p50 vs {baseline}",
                    "≤",
                    target.max_p50_ratio,
                    self.p50_ratio,
                    "x",
                )
            )
        if target.max_p99_ratio is not None:
            found.append(
                Check(
                    self.scenario.name,
                    f"p99 vs {baseline}",
                    "≤",
                    target.max_p99_ratio,
                    self.p99_ratio,
                    "x",
                )
            )
        if target.max_errors is not None:
            found.append(
                Check(
                    self.scenario.name,
                    "errors, all rounds",
                    "≤",
                    target.max_errors,
                    float(self.errors),
                    "",
                )
            )
        return found

    @property
    def target_met(self) -> bool | None:
        checks = self.checks()
        if not checks or any(check.met is None for check in checks):
            return None
        return all(check.met for check in checks)


@dataclass(frozen=True)
class Check:
    """One criterion of a target: `achieved <op> limit`."""

    subject: str
    measure: str
    op: str
    limit: float
    achieved: float | None
    unit: str

    @property
    def met(self) -> bool | None:
        if self.achieved is None:
            return None
        return self.achieved >= self.limit if self.op == "≥" else self.achieved <= self.limit

    @property
    def goal(self) -> str:
        return f"{self.op} {self.limit:g}{self.unit}"

    @property
    def achieved_text(self) -> str:
        if self.achieved is None:
            return "—"
        if self.unit == "x":
            return f"{self.achieved:.2f}x"
        return f"{self.achieved:g}{(' ' + self.unit) if self.unit else ''}"

    @property
    def status(self) -> str:
        return "n/a" if self.met is None else ("met" if self.met else "MISSED")


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


def _background(own: Sequence[Sample]) -> dict[str, float] | None:
    loads = [sample.background for sample in own if sample.background is not None]
    if not loads:
        return None
    return {
        "requests_per_second": round(
            statistics.median(load.requests_per_second for load in loads), 2
        ),
        "p50_ms": round(statistics.median(load.p50_ms for load in loads), 3),
        "p99_ms": round(statistics.median(load.p99_ms for load in loads), 3),
        "errors": sum(load.errors for load in loads),
    }


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
                p50_ratio=_same_round_ratio(own, scenario.baseline, by_key, lambda s: s.wrk.p50_ms),
                server_cores=own[-1].server_cores,
                background=_background(own),
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
    "vs",
    "rps ratio",
    "p50 ratio",
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
                summary.scenario.baseline or "",
                _ratio(summary.throughput_ratio, reference=reference),
                _ratio(summary.p50_ratio, reference=reference),
                _ratio(summary.p99_ratio, reference=reference),
                _ratio(summary.efficiency_ratio, reference=reference),
                _verdict(summary),
            )
        )
    return rows


def checks(summaries: Sequence[Summary], extras: Sequence[ExtraResult]) -> list[Check]:
    """Every target of the run, in the issue's order: scenario ratios, then the extras."""
    found = [check for summary in summaries for check in summary.checks()]
    found += [
        Check(
            extra.name, extra.label or extra.description, "≤", extra.limit, extra.value, extra.unit
        )
        for extra in extras
    ]
    return found


TARGET_HEADERS = ("subject", "measure", "goal", "achieved", "status")


def _target_rows(found: Sequence[Check]) -> list[tuple[str, ...]]:
    return [
        (check.subject, check.measure, check.goal, check.achieved_text, check.status)
        for check in found
    ]


def rich_table(summaries: Sequence[Summary], title: str) -> Table:
    table = Table(title=title)
    for index, header in enumerate(HEADERS):
        table.add_column(
            header,
            justify="left" if index in (0, 9, len(HEADERS) - 1) else "right",
            no_wrap=index == 0,
        )
    for row, summary in zip(_rows(summaries), summaries, strict=True):
        met = summary.target_met
        style = None if met is None else ("green" if met else "bold red")
        table.add_row(*row, style=style)
    return table


def rich_targets(found: Sequence[Check], title: str) -> Table:
    table = Table(title=title)
    for header in TARGET_HEADERS:
        table.add_column(header, justify="right" if header == "achieved" else "left")
    for row, check in zip(_target_rows(found), found, strict=True):
        style = None if check.met is None else ("green" if check.met else "bold red")
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


def background_notes(summaries: Sequence[Summary]) -> list[str]:
    notes = []
    for summary in summaries:
        load, spec = summary.background, summary.scenario.background
        if load is None or spec is None:
            continue
        notes.append(
            f"{summary.scenario.name}: alongside, {spec.description} at {spec.connections} "
            f"connections served {load['requests_per_second']:,.1f} req/s, p50 "
            f"{load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, {load['errors']:g} errors."
        )
    return notes


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: set[int]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" if i in left else "---:" for i in range(len(headers))) + " |",
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def markdown(
    summaries: Sequence[Summary],
    meta: dict[str, Any],
    extras: Sequence[ExtraResult] = (),
) -> str:
    load = meta.get("loadavg_start") or (0.0,)
    load_end = meta.get("loadavg_end") or (0.0,)
    lines = [
        f"# Slipway benchmark, {meta['timestamp']}",
        "",
        (
            f"wrk `-t{meta['threads']} -c{meta['connections']} -d{meta['duration_s']}s` "
            "(unless a scenario sets its own connections), "
            f"{meta['rounds']} interleaved rounds, medians shown; server on core "
            f"{meta['server_cpus']}, wrk on core {meta['client_cpus']}. Load average at "
            f"start {load[0]:.2f}, at end {load_end[0]:.2f}."
            + (f" Commit {meta['git_sha'][:12]}." if meta.get("git_sha") else "")
        ),
    ]
    stack = meta.get("stack")
    if stack:
        lines += [
            "",
            (
                f"Slipway runs in production mode on PostgreSQL {stack['versions'].get('postgresql', '?')} "
                f"and Redis {stack['versions'].get('redis', '?')} (loopback, pinned with wrk), "
                f"seeded with `slipway seed`: {stack['seed_sizes']['large']:,} products "
                f"(and {stack['seed_sizes']['small']:,} for search_small)"
                + (", restored from the seeded-data cache." if stack.get("from_cache") else ".")
            ),
        ]
    found = checks(summaries, extras)
    if found:
        lines += ["", "## Targets", ""]
        lines += _table(TARGET_HEADERS, _target_rows(found), {0, 1, 2, 4})
    lines += [
        "",
        "## Scenarios",
        "",
        (
            "Ratios divide each scenario by its baseline (`vs`) within the same round, then take "
            "the median. Absolute figures drift on a shared machine; quote the ratios. CPU "
            "columns are the share of one core used under load. req/CPU-s is throughput per "
            "second of server CPU, the cost of a request, which other load on the machine "
            "distorts less."
        ),
        "",
    ]
    lines += _table(HEADERS, _rows(summaries), {0, 9, len(HEADERS) - 1})
    notes = background_notes(summaries)
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    if extras:
        lines += ["", "## Start-up and memory", ""]
        for extra in extras:
            lines.append(
                f"- **{extra.name}**: {extra.value:g} {extra.unit} ({extra.description}; goal {extra.goal})."
            )
            if extra.name == "app_import":
                heavy = extra.details.get("heaviest_imports", [])[:8]
                lines.append(
                    f"  create_app() takes {extra.details.get('create_app_s', 0):g} s more. "
                    "Import time by package (`-X importtime` self time, summed): "
                    + ", ".join(f"{row['package']} {row['self_ms']:.0f} ms" for row in heavy)
                    + "."
                )
    warned = warnings(summaries)
    if warned:
        lines += ["", *[f"**Warning:** {note}" for note in warned]]
    if meta.get("skipped"):
        lines += ["", "Skipped:"]
        lines += [f"- `{item['name']}`: {item['reason']}" for item in meta["skipped"]]
    return "\n".join(lines) + "\n"


def to_json(
    summaries: Sequence[Summary],
    meta: dict[str, Any],
    servers: dict[str, Any],
    extras: Sequence[ExtraResult] = (),
) -> str:
    document = {
        "meta": meta,
        "servers": servers,
        "targets": [
            {
                "subject": check.subject,
                "measure": check.measure,
                "goal": check.goal,
                "limit": check.limit,
                "achieved": _round(check.achieved),
                "met": check.met,
            }
            for check in checks(summaries, extras)
        ],
        "extras": [
            {
                "name": extra.name,
                "description": extra.description,
                "value": extra.value,
                "unit": extra.unit,
                "limit": extra.limit,
                "met": extra.met,
                "details": extra.details,
            }
            for extra in extras
        ],
        "scenarios": [
            {
                "name": summary.scenario.name,
                "description": summary.scenario.description,
                "origin": summary.scenario.origin,
                "server": summary.scenario.server,
                "path": summary.scenario.path,
                "lua_script": summary.scenario.lua_script,
                "connections": summary.scenario.connections,
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
                "server_cores": summary.server_cores,
                "server_cpu_pct": summary.server_cpu_pct,
                "client_cpu_pct": summary.client_cpu_pct,
                "requests_per_cpu_second": round(summary.requests_per_cpu_second, 1),
                "contended": summary.contended,
                "background": summary.background,
                "ratios": {
                    "throughput": _round(summary.throughput_ratio),
                    "p50": _round(summary.p50_ratio),
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
                        "background": asdict(sample.background) if sample.background else None,
                    }
                    for sample in summary.samples
                ],
            }
            for summary in summaries
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
