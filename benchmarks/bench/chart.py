"""A PNG of throughput and p99 per scenario, baselines drawn apart from Slipway's scenarios."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .report import Summary

BASELINE_COLOUR = "#9e9e9e"
SCENARIO_COLOUR = "#1f77b4"
MISSED_COLOUR = "#d62728"


def render(
    summaries: Sequence[Summary], path: Path, meta: dict[str, Any], console: Console
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
    reference = next((s for s in summaries if s.scenario.baseline is None), None)
    height = 1.2 + 0.45 * len(summaries)
    figure, (rps_axis, p99_axis) = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    positions = list(range(len(summaries)))

    panels = (
        (rps_axis, [s.rps for s in summaries], "requests/s (median)", "throughput", "{:,.0f}"),
        (p99_axis, [s.p99_ms for s in summaries], "p99 latency, ms (median)", "p99", "{:.2f} ms"),
    )
    for axis, values, label, ratio_kind, fmt in panels:
        axis.barh(positions, values, color=colours)
        axis.set_xlabel(label)
        axis.grid(axis="x", linestyle=":", alpha=0.6)
        axis.set_xlim(0, max(values) * 1.35 if max(values) > 0 else 1)
        for position, value, summary in zip(positions, values, summaries, strict=True):
            ratio = summary.throughput_ratio if ratio_kind == "throughput" else summary.p99_ratio
            suffix = f"  ({ratio:.2f}x)" if ratio is not None else ""
            axis.text(value, position, " " + fmt.format(value) + suffix, va="center", fontsize=8)
        if reference is not None:
            reference_value = reference.rps if ratio_kind == "throughput" else reference.p99_ms
            axis.axvline(reference_value, color="black", linestyle="--", linewidth=1)
            axis.annotate(
                reference.scenario.name,
                xy=(reference_value, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 2),
                textcoords="offset points",
                fontsize=8,
            )
    rps_axis.set_yticks(positions, names)
    rps_axis.set_ylabel("scenario")
    rps_axis.invert_yaxis()
    figure.legend(
        handles=[
            Patch(color=BASELINE_COLOUR, label="baseline"),
            Patch(color=SCENARIO_COLOUR, label="Slipway (target met or none)"),
            Patch(color=MISSED_COLOUR, label="Slipway (target missed)"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    figure.suptitle(
        f"Slipway benchmark {meta['timestamp']}: wrk -c{meta['connections']} "
        f"-d{meta['duration_s']}s, median of {meta['rounds']} rounds; "
        "ratios vs baseline in brackets",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
