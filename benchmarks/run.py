"""Slipway's benchmark suite: `uv run python benchmarks/run.py --help`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# Run as a script, Python puts this directory on sys.path; run as `python -m benchmarks.run`
# it does not, and the `bench` package next to this file must still resolve.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench import registry, runner  # noqa: E402
from bench.wrk import HarnessError  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"

cli = typer.Typer(add_completion=False, no_args_is_help=False)


@cli.command()
def main(
    quick: Annotated[
        bool, typer.Option(help="Short durations and the quick subset of scenarios.")
    ] = False,
    duration: Annotated[
        float | None, typer.Option(help="Seconds of load per scenario per round [10; quick 5].")
    ] = None,
    warmup: Annotated[
        float | None, typer.Option(help="Seconds of warm-up load per scenario [3; quick 1].")
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds; medians are reported.")
    ] = 3,
    scenarios: Annotated[
        str | None,
        typer.Option(help="Comma-separated scenario names; their baselines are added."),
    ] = None,
    connections: Annotated[int, typer.Option(min=1, help="wrk connections.")] = 64,
    threads: Annotated[int, typer.Option(min=1, help="wrk threads.")] = 1,
    server_cpus: Annotated[str, typer.Option(help="taskset core list for servers.")] = "1",
    client_cpus: Annotated[str, typer.Option(help="taskset core list for wrk.")] = "0",
    pin: Annotated[bool, typer.Option(help="Pin server and wrk to their cores.")] = True,
    output_dir: Annotated[
        Path, typer.Option(help="Where JSON, Markdown and PNG go.")
    ] = DEFAULT_OUTPUT,
    chart: Annotated[bool, typer.Option(help="Write a PNG chart (needs matplotlib).")] = True,
    keep_logs: Annotated[bool, typer.Option(help="Keep server logs and scratch files.")] = False,
    list_scenarios: Annotated[
        bool, typer.Option("--list", help="List the scenarios and exit.")
    ] = False,
    check_targets: Annotated[
        bool, typer.Option(help="Exit 1 when a target is missed (off: timings are noisy).")
    ] = False,
) -> None:
    """Measure Slipway against bare baselines with wrk, and report same-round ratios."""
    console = Console()
    if not console.is_terminal:
        # Rich assumes 80 columns when piped, which folds the results table; logs can be wide.
        console = Console(width=max(console.width, 160))
    if list_scenarios:
        for scenario in registry.SCENARIOS.values():
            flags = " [quick]" if scenario.quick else ""
            base = f" vs {scenario.baseline}" if scenario.baseline else " (reference)"
            console.print(f"{scenario.name}{base}{flags}: {scenario.description}", markup=False)
        return

    requested = (
        [name.strip() for name in scenarios.split(",") if name.strip()] if scenarios else None
    )
    try:
        selected = registry.resolve(requested, quick=quick)
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}")
        raise typer.Exit(2) from exc

    skipped: list[dict[str, str]] = []
    runnable = []
    for scenario in selected:
        reason = registry.SERVERS[scenario.server].unavailable()
        if reason is None:
            runnable.append(scenario)
        elif requested and scenario.name in requested:
            console.print(f"[red]{scenario.name} cannot run: {reason}")
            raise typer.Exit(2)
        else:
            console.print(f"[yellow]skipping {scenario.name}: {reason}")
            skipped.append({"name": scenario.name, "reason": reason})

    config = runner.RunConfig(
        duration_s=duration if duration is not None else (5.0 if quick else 10.0),
        warmup_s=warmup if warmup is not None else (1.0 if quick else 3.0),
        rounds=rounds,
        connections=connections,
        threads=threads,
        server_cpus=server_cpus if pin else None,
        client_cpus=client_cpus if pin else None,
        output_dir=output_dir,
        keep_logs=keep_logs,
        chart=chart,
    )
    try:
        outcome = runner.run(runnable, config, console=console, skipped=skipped)
    except HarnessError as exc:
        console.print(f"[red]benchmark failed: {exc}")
        raise typer.Exit(1) from exc

    for path in (outcome.json_path, outcome.markdown_path, outcome.chart_path):
        if path is not None:
            console.print(f"wrote {path}")
    if check_targets and any(summary.target_met is False for summary in outcome.summaries):
        raise typer.Exit(1)


if __name__ == "__main__":
    cli()
