"""The app starts on both backends and answers its probes."""

from __future__ import annotations

import httpx


async def test_ready_checks_database(client: httpx.AsyncClient, backend: str) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"]["status"] == "ok"
    assert body["status"] == "ok"
