"""`slipway seed`: fill the database with deterministic demo or benchmark data."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from slipway.cli.common import app, load_settings


@app.command()
def seed(
    products: Annotated[int, typer.Option(min=0, max=10_000_000, help="Products to create.")] = 100,
    orders: Annotated[int, typer.Option(min=0, max=10_000_000, help="Orders to create.")] = 100,
    users: Annotated[int, typer.Option(min=0, max=1_000_000, help="Customers to create.")] = 10,
    seed_value: Annotated[int, typer.Option("--seed", help="Same seed, same data.")] = 1,
) -> None:
    """Insert deterministic users, products and orders (idempotent per --seed)."""
    from slipway.identity.security import PasswordHasher
    from slipway.platform.db.engine import create_engine
    from slipway.platform.logging import configure_logging
    from slipway.seeding import SEED_PASSWORD, SeedError
    from slipway.seeding import seed as run_seed

    settings = load_settings()
    configure_logging("WARNING", settings.effective_log_format)

    async def main() -> None:
        password_hash = await PasswordHasher(settings).hash(SEED_PASSWORD)
        engine = create_engine(settings, null_pool=True)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, transient=False) as bar:
                tasks = {
                    "users": bar.add_task("users", total=users),
                    "products": bar.add_task("products", total=products),
                    "orders": bar.add_task("orders", total=orders),
                }
                await run_seed(
                    engine,
                    seed_value=seed_value,
                    users=users,
                    products=products,
                    orders=orders,
                    password_hash=password_hash,
                    progress=lambda stage, n: bar.advance(tasks[stage], n),
                )
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except SeedError as error:
        typer.echo(f"slipway seed: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"seeded users={users} products={products} orders={orders} seed={seed_value}")
