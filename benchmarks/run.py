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

from bench import registry, runner, stack, wrk  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"

cli = typer.Typer(add_completion=False, no_args_is_help=False)


@cli.command()
def main(
    quick: Annotated[
        bool,
        typer.Option(help="The quick subset, short durations and a small seed (< 3 minutes)."),
    ] = False,
    smoke: Annotated[
        bool,
        typer.Option(
            help="Does every part work? --quick with 1 round of 2 s at 8 connections, no "
            "warm-up, a tiny seed and no seed cache (the CI smoke test)."
        ),
    ] = False,
    duration: Annotated[
        float | None, typer.Option(help="Seconds of load per scenario per round [10; quick 2].")
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
    extras: Annotated[
        bool | None,
        typer.Option(
            help="Import time, cold start and RSS growth [on unless --scenarios is given]."
        ),
    ] = None,
    products: Annotated[
        int | None,
        typer.Option(min=100, help="Products in the large database [1,000,000; quick 20,000]."),
    ] = None,
    data_cache: Annotated[
        bool,
        typer.Option(
            help="Keep the seeded PostgreSQL cluster between runs (~/.cache/slipway-bench); "
            "any change to the migrations or the seed code seeds afresh."
        ),
    ] = True,
    memory_requests: Annotated[
        int | None,
        typer.Option(min=100, help="Requests per memory batch [10,000; quick 500]."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="wrk --timeout: slower responses count as errors.")
    ] = 10.0,
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

    if smoke:
        quick = True
        rounds = 1
        duration = duration if duration is not None else 2.0
        warmup = warmup if warmup is not None else 0.0
        data_cache = False
    requested = (
        [name.strip() for name in scenarios.split(",") if name.strip()] if scenarios else None
    )
    try:
        selected = registry.resolve(requested, quick=quick)
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}")
        raise typer.Exit(2) from exc

    skipped: list[dict[str, str]] = [
        {"name": f"{module}.py", "reason": reason}
        for module, reason in registry.EXTENSION_PROBLEMS.items()
    ]
    for item in skipped:
        console.print(f"[yellow]not merged: {item['name']}: {item['reason']}", markup=False)
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

    plan = stack.SMOKE_PLAN if smoke else (stack.QUICK_PLAN if quick else stack.FULL_PLAN)
    if products is not None:
        plan = stack.SeedPlan(
            large_products=products,
            small_products=min(plan.small_products, products),
            users=plan.users,
            orders=plan.orders,
        )
    config = runner.RunConfig(
        duration_s=duration if duration is not None else (2.0 if quick else 10.0),
        warmup_s=warmup if warmup is not None else (1.0 if quick else 3.0),
        rounds=rounds,
        connections=connections,
        threads=threads,
        server_cpus=server_cpus if pin else None,
        client_cpus=client_cpus if pin else None,
        output_dir=output_dir,
        keep_logs=keep_logs,
        chart=chart,
        seed_plan=plan,
        data_cache=stack.default_cache_root() if data_cache else None,
        extras=extras if extras is not None else requested is None,
        memory_requests=memory_requests or (300 if smoke else 500 if quick else 10_000),
        extra_repeats=1 if quick else 3,
        timeout_s=timeout,
        max_connections=8 if smoke else None,
    )
    try:
        outcome = runner.run(runnable, config, console=console, skipped=skipped)
    except wrk.HarnessError as exc:
        console.print(f"[red]benchmark failed: {exc}")
        raise typer.Exit(1) from exc

    for path in (outcome.json_path, outcome.markdown_path, outcome.chart_path):
        if path is not None:
            console.print(f"wrote {path}")
    missed = any(summary.target_met is False for summary in outcome.summaries) or any(
        not extra.met for extra in outcome.extras
    )
    if check_targets and missed:
        raise typer.Exit(1)


if __name__ == "__main__":
    cli()
