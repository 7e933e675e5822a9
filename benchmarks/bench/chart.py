"""A PNG of throughput and p99 per scenario (baselines drawn apart from Slipway's
scenarios), and of every target as achieved relative to its goal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .report import Check, Summary

BASELINE_COLOUR = "#9e9e9e"
SCENARIO_COLOUR = "#1f77b4"
MET_COLOUR = "#2ca02c"
MISSED_COLOUR = "#d62728"
REFERENCE = "bare_fastapi"


def goal_fraction(check: Check) -> float:
    """Achieved relative to the goal, oriented so that 1 or more means met."""
    if check.achieved is None:
        return 0.0
    if check.limit == 0:
        return 1.0 if check.achieved <= 0 else 0.0
    if check.op == "≥":
        return check.achieved / check.limit
    return check.limit / check.achieved if check.achieved > 0 else 2.0


def render(
    summaries: Sequence[Summary],
    path: Path,
    meta: dict[str, Any],
    console: Console,
    checks: Sequence[Check] = (),
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and CI
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        console.print("[yellow]matplotlib is not installed: no chart (uv sync --group dev)")
        return None
    if not summaries:
        return None

    names = [summary.scenario.name for summary in summaries]
    colours = [
        BASELINE_COLOUR
        if summary.scenario.is_baseline
        else (MISSED_COLOUR if summary.target_met is False else SCENARIO_COLOUR)
        for summary in summaries
    ]
    reference = next((s for s in summaries if s.scenario.name == REFERENCE), None)
    top_height = 1.2 + 0.42 * len(summaries)
    bottom_height = (1.0 + 0.38 * len(checks)) if checks else 0.0
    figure = plt.figure(figsize=(14, top_height + bottom_height + 0.8))
    grid = figure.add_gridspec(
        2 if checks else 1,
        2,
        height_ratios=[top_height, bottom_height] if checks else [top_height],
        hspace=0.25,
    )
    rps_axis = figure.add_subplot(grid[0, 0])
    p99_axis = figure.add_subplot(grid[0, 1], sharey=rps_axis)
    positions = list(range(len(summaries)))

    panels = (
        (
            rps_axis,
            [s.rps for s in summaries],
            "requests/s, median of rounds (log scale)",
            "throughput",
            "{:,.0f}",
        ),
        (
            p99_axis,
            [s.p99_ms for s in summaries],
            "p99 latency, ms, median of rounds (log scale)",
            "p99",
            "{:.1f} ms",
        ),
    )
    for axis, raw_values, label, ratio_kind, fmt in panels:
        # Nginx and a database write differ by three orders of magnitude: on a linear axis
        # every Slipway scenario would be a sliver.
        values = [max(value, 0.01) for value in raw_values]
        floor = min(values) / 2
        axis.set_xscale("log")
        axis.barh(positions, [value - floor for value in values], left=floor, color=colours)
        axis.set_xlabel(label)
        axis.grid(axis="x", linestyle=":", alpha=0.6)
        axis.set_xlim(floor, max(values) * 25)
        for position, value, summary in zip(positions, values, summaries, strict=True):
            ratio = summary.throughput_ratio if ratio_kind == "throughput" else summary.p99_ratio
            suffix = f"  ({ratio:.2f}x {summary.scenario.baseline})" if ratio is not None else ""
            axis.text(value, position, " " + fmt.format(value) + suffix, va="center", fontsize=7)
        if reference is not None:
            reference_value = reference.rps if ratio_kind == "throughput" else reference.p99_ms
            axis.axvline(reference_value, color="black", linestyle="--", linewidth=1)
            axis.annotate(
                f"{REFERENCE} (reference)",
                xy=(reference_value, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 2),
                textcoords="offset points",
                fontsize=8,
            )
    rps_axis.set_yticks(positions, names, fontsize=8)
    rps_axis.set_ylabel("scenario")
    p99_axis.tick_params(labelleft=False)
    rps_axis.invert_yaxis()

    if checks:
        axis = figure.add_subplot(grid[1, :])
        fractions = [goal_fraction(check) for check in checks]
        shown = [min(value, 3.0) for value in fractions]
        rows = list(range(len(checks)))
        axis.barh(
            rows,
            shown,
            color=[
                BASELINE_COLOUR if c.met is None else (MET_COLOUR if c.met else MISSED_COLOUR)
                for c in checks
            ],
        )
        axis.axvline(1.0, color="black", linestyle="--", linewidth=1)
        axis.annotate(
            "goal",
            xy=(1.0, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, 2),
            textcoords="offset points",
            fontsize=8,
        )
        for row, value, check in zip(rows, shown, checks, strict=True):
            axis.text(
                value, row, f" {check.achieved_text} (goal {check.goal})", va="center", fontsize=7
            )
        axis.set_yticks(rows, [f"{c.subject}: {c.measure}" for c in checks], fontsize=7)
        axis.set_xlim(0, 3.6)
        axis.set_xlabel("achieved relative to the goal (1 or more = met; capped at 3)")
        axis.set_ylabel("target")
        axis.grid(axis="x", linestyle=":", alpha=0.6)
        axis.invert_yaxis()

    figure.legend(
        handles=[
            Patch(color=BASELINE_COLOUR, label="baseline / reference"),
            Patch(color=SCENARIO_COLOUR, label="Slipway (target met or none)"),
            Patch(color=MISSED_COLOUR, label="target missed"),
            Patch(color=MET_COLOUR, label="target met"),
        ],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    load = meta.get("loadavg_start", (0.0,))[0]
    figure.suptitle(
        f"Slipway benchmark {meta['timestamp']}: wrk -c{meta['connections']} "
        f"-d{meta['duration_s']}s, median of {meta['rounds']} rounds, load average {load:.1f}; "
        "same-round ratios vs the baseline in brackets",
        fontsize=10,
    )
    figure.subplots_adjust(left=0.24, right=0.98, top=0.95, bottom=0.06)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
