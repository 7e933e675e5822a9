"""`slipway seed`, run as the real command against a migrated database: counts, a progress
bar, idempotent reruns (same checksums), seeds sharing a database, and refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import TEST_SECRET
from tests.integration.conftest import run_slipway, slipway_env

pytestmark = pytest.mark.timeout(240)

#: Canonical rows of one seed, keyed by business values (SKUs, not serial ids).
CANONICAL = {
    "users": "SELECT id, email, role, email_verified, created_at FROM users "
    "WHERE email LIKE :emails ORDER BY email",
    "products": "SELECT sku, name, description, price_minor, currency, stock, status, "
    "created_at FROM products WHERE sku LIKE :skus ORDER BY sku",
    "orders": "SELECT o.id, o.user_id, o.status, o.total_minor, o.currency, o.created_at "
    "FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email LIKE :emails "
    "ORDER BY o.id",
    "order_lines": "SELECT l.order_id, p.sku, l.quantity, l.unit_price_minor "
    "FROM order_lines l JOIN products p ON p.id = l.product_id "
    "JOIN orders o ON o.id = l.order_id JOIN users u ON u.id = o.user_id "
    "WHERE u.email LIKE :emails ORDER BY l.order_id, p.sku",
}


async def snapshot(database_url: str, seed: int) -> dict[str, tuple[int, str]]:
    """(row count, sha256 of the rows) per table, for one seed's data."""
    engine = create_async_engine(database_url)
    params = {"emails": f"%@seed{seed}.example.com", "skus": f"S{seed}-%"}
    try:
        async with engine.connect() as conn:
            result: dict[str, tuple[int, str]] = {}
            for table, sql in CANONICAL.items():
                rows = (await conn.execute(text(sql), params)).all()
                digest = hashlib.sha256(repr([tuple(map(str, row)) for row in rows]).encode())
                result[table] = (len(rows), digest.hexdigest())
            return result
    finally:
        await engine.dispose()


async def scalar(database_url: str, sql: str, **params: Any) -> Any:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()
    finally:
        await engine.dispose()


def seed(database_url: str, cwd: Path, *args: str) -> str:
    env = slipway_env(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
    )
    completed = run_slipway(["seed", *args], cwd=cwd, env=env, timeout=180)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    return completed.stdout


async def test_seed_is_idempotent_and_shows_progress(database_url: str, tmp_path: Path) -> None:
    args = ("--products", "300", "--orders", "400", "--users", "12", "--seed", "7")
    out = seed(database_url, tmp_path, *args)

    assert "seeded users=12 products=300 orders=400 seed=7" in out
    for stage, total in (("users", 12), ("products", 300), ("orders", 400)):
        bar = next(line for line in out.splitlines() if line.startswith(stage))
        assert f"{total}/{total}" in bar, out
        assert "━" in bar, out  # the bar itself
    first = await snapshot(database_url, 7)
    assert {table: count for table, (count, _) in first.items()} == {
        "users": 12,
        "products": 300,
        "orders": 400,
        "order_lines": first["order_lines"][0],
    }
    assert 400 <= first["order_lines"][0] <= 1200  # 1-3 lines per order

    seed(database_url, tmp_path, *args)
    assert await snapshot(database_url, 7) == first

    # Totals are the sum of their lines, and lines carry their product's price.
    mismatched = await scalar(
        database_url,
        "SELECT count(*) FROM orders o WHERE o.total_minor <> "
        "(SELECT sum(l.quantity * l.unit_price_minor) FROM order_lines l WHERE l.order_id = o.id)",
    )
    assert mismatched == 0
    wrong_price = await scalar(
        database_url,
        "SELECT count(*) FROM order_lines l JOIN products p ON p.id = l.product_id "
        "WHERE l.unit_price_minor <> p.price_minor",
    )
    assert wrong_price == 0
    # Seeded customers are verified and can log in (the documented demo password).
    assert (
        await scalar(
            database_url,
            "SELECT count(*) FROM users WHERE email_verified AND email LIKE '%@seed7%'",
        )
        == 12
    )


# PostgreSQL: where sequence values are spent on skipped rows (SQLite reuses rowids).
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_seeds_sharing_a_database_stay_apart(database_url: str, tmp_path: Path) -> None:
    """Seed 7, then seed 8, then seed 7 grown: product ids of one seed are no longer
    contiguous (PostgreSQL even spends sequence values on the rows it skips), yet every
    line of a seed-7 order points at a seed-7 product."""
    seed(database_url, tmp_path, "--products", "50", "--orders", "0", "--users", "3", "--seed", "7")
    seed(database_url, tmp_path, "--products", "50", "--orders", "0", "--users", "0", "--seed", "8")
    seed(
        database_url,
        tmp_path,
        "--products",
        "120",
        "--orders",
        "300",
        "--users",
        "3",
        "--seed",
        "7",
    )

    foreign = await scalar(
        database_url,
        "SELECT count(*) FROM order_lines l JOIN products p ON p.id = l.product_id "
        "JOIN orders o ON o.id = l.order_id JOIN users u ON u.id = o.user_id "
        "WHERE u.email LIKE '%@seed7.example.com' AND p.sku NOT LIKE 'S7-%'",
    )
    assert foreign == 0
    used = await scalar(
        database_url,
        "SELECT count(DISTINCT p.sku) FROM order_lines l JOIN products p ON p.id = l.product_id "
        "WHERE p.sku >= 'S7-00000050' AND p.sku LIKE 'S7-%'",
    )
    assert used > 0  # the products added by the third run are ordered too
    counts = await snapshot(database_url, 8)
    assert counts["products"][0] == 50
    assert counts["orders"][0] == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_seed_refuses_orders_without_products(database_url: str, tmp_path: Path) -> None:
    env = slipway_env(DATABASE_URL=database_url, SECRET_KEY=TEST_SECRET, ENVIRONMENT="testing")
    completed = run_slipway(
        ["seed", "--products", "0", "--orders", "5", "--users", "2"], cwd=tmp_path, env=env
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "orders need at least one user and one product" in completed.stderr
    assert "Traceback" not in completed.stderr
    rejected = run_slipway(["seed", "--products", "-1"], cwd=tmp_path, env=env)
    assert rejected.returncode == 2, rejected.stderr
