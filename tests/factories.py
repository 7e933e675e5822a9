"""Factories for the commerce tests (catalog, orders, reports): accounts written straight to
the database with a precomputed Argon2 hash, then logged in through the real API; products
through the staff API or in bulk; orders through the API with an Idempotency-Key."""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from slipway.catalog.models import Product
from slipway.identity.models import User
from slipway.identity.security import PasswordHasher
from slipway.platform.db.base import utcnow
from tests.conftest import make_settings
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess

PASSWORD = "correct horse battery"
LOGIN = "/api/v1/auth/login"
PRODUCTS = "/api/v1/products"
ORDERS = "/api/v1/orders"


@functools.cache
def password_hash() -> str:
    """One real Argon2 hash of PASSWORD for every factory-made account (hashing is slow on
    purpose; verifying at login still runs the real check)."""

    def compute() -> str:
        return asyncio.run(PasswordHasher(make_settings()).hash(PASSWORD))

    # A private loop in a thread works whether or not the caller is inside a running loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(compute).result(timeout=60)


def user_row(
    *, role: str = "customer", verified: bool = True, email: str | None = None
) -> dict[str, Any]:
    """A `users` row that can log in with PASSWORD."""
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "email": email or f"u-{uuid.uuid4().hex[:12]}@example.com",
        "password_hash": password_hash(),
        "role": role,
        "is_active": True,
        "email_verified": verified,
        # Tokens issued before a password change are refused: keep this in the past.
        "password_changed_at": now - timedelta(minutes=5),
        "created_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class Person:
    id: uuid.UUID
    email: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def session_factory(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = app.state.services.session_factory
    return factory


async def login(client: httpx.AsyncClient, email: str) -> str:
    response = await client.post(LOGIN, data={"username": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def person(
    client: httpx.AsyncClient, app: FastAPI, *, role: str = "customer", verified: bool = True
) -> Person:
    """A user inserted in the database, logged in through the API."""
    row = user_row(role=role, verified=verified)
    async with session_factory(app)() as session, session.begin():
        await session.execute(insert(User), [row])
    return Person(row["id"], row["email"], await login(client, row["email"]))


async def customer(client: httpx.AsyncClient, app: FastAPI, *, verified: bool = True) -> Person:
    return await person(client, app, verified=verified)


async def staff(client: httpx.AsyncClient, app: FastAPI) -> Person:
    return await person(client, app, role="staff")


def product_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": "Steel kettle",
        "description": "Boils water fast",
        "price_minor": 2599,
        "currency": "USD",
        "stock": 10,
    }
    body.update(overrides)
    return body


async def create_product(
    client: httpx.AsyncClient, staff_headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    """A product made through the staff API (the path real data takes)."""
    response = await client.post(PRODUCTS, json=product_body(**overrides), headers=staff_headers)
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


def product_row(index: int, **overrides: Any) -> dict[str, Any]:
    created = overrides.pop("created_at", None) or utcnow()
    row: dict[str, Any] = {
        "sku": f"BULK-{uuid.uuid4().hex[:8]}-{index}",
        "name": f"Bulk item {index}",
        "description": "",
        "price_minor": 1000 + index,
        "currency": "USD",
        "stock": 100,
        "status": "active",
        "version": 1,
        "created_at": created,
        "updated_at": created,
    }
    row.update(overrides)
    return row


async def insert_products(app: FastAPI, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Bulk insert (many products, fast); returns their ids in the order given."""
    async with session_factory(app)() as session, session.begin():
        await session.execute(insert(Product), list(rows))
        skus = [row["sku"] for row in rows]
        result = await session.execute(select(Product.sku, Product.id).where(Product.sku.in_(skus)))
        found = dict(result.all())
    return [found[sku] for sku in skus]


async def product_stock(app: FastAPI, product_id: int) -> int:
    async with session_factory(app)() as session:
        stock = await session.scalar(select(Product.stock).where(Product.id == product_id))
    assert stock is not None
    return int(stock)


async def place_order(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    items: Sequence[dict[str, Any]],
    *,
    key: str | None = None,
) -> httpx.Response:
    """POST /orders with a fresh Idempotency-Key unless one is given."""
    return await client.post(
        ORDERS,
        json={"items": list(items)},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def change_status(
    client: httpx.AsyncClient, staff_headers: dict[str, str], order_id: str, status: str
) -> httpx.Response:
    return await client.post(
        f"{ORDERS}/{order_id}/status", json={"status": status}, headers=staff_headers
    )


# --- SQL the app runs ----------------------------------------------------------------------


@contextmanager
def captured_statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) the engine sends while the block runs."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def explain(app: FastAPI, statement: str, parameters: Any) -> str:
    """PostgreSQL's plan for a captured statement, run as-is with its own parameters."""
    async with session_factory(app)() as session:
        connection = await session.connection()
        rows = await connection.exec_driver_sql(f"EXPLAIN {statement}", tuple(parameters))
        return "\n".join(row[0] for row in rows)


# --- Real processes (integration tests) ----------------------------------------------------


@dataclass
class AppInstance:
    """One `uvicorn --factory slipway.app:create_app` process on a free loopback port."""

    name: str
    process: ManagedProcess
    port: int

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://{LOOPBACK}:{self.port}{path}"


def start_app_instance(env: Mapping[str, str], cwd: Path, name: str) -> AppInstance:
    """Start an instance and wait for /health/ready; retry when the port was taken."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        process = ManagedProcess(
            [sys.executable, "-m", "uvicorn", "--factory", "slipway.app:create_app",
             "--host", LOOPBACK, "--port", str(port), "--no-access-log"],
            name=f"uvicorn-{name}",
            env=env,
            inherit_env=False,
            cwd=cwd,
            log_path=cwd / f"{name}.{attempt}.log",
        ).start()  # fmt: skip
        try:
            process.wait_for_http(f"http://{LOOPBACK}:{port}/health/ready", timeout=60)
        except Exception:
            process.close()
            if "address already in use" in process.log_text().lower():
                continue
            raise
        return AppInstance(name, process, port)
    raise RuntimeError(f"no free port for uvicorn {name}")
