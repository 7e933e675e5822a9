"""The reference every ratio divides by: FastAPI's hello world as its tutorial writes it.

One async route, default app settings, no middleware. The return annotation makes FastAPI
validate and serialise through pydantic, which is what a typed route in Slipway pays too.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def status() -> dict[str, str]:
    return {"status": "ok"}
