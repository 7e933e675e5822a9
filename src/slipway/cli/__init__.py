"""The `slipway` command line (typer)."""

from __future__ import annotations

from slipway.cli import db as _db
from slipway.cli import healthcheck as _healthcheck
from slipway.cli import ops as _ops
from slipway.cli import seed as _seed
from slipway.cli import serve as _serve
from slipway.cli import users as _users
from slipway.cli import worker as _worker
from slipway.cli.common import app

# Importing the command modules registers their commands on `app`.
_ = (_db, _healthcheck, _ops, _seed, _serve, _users, _worker)


def main() -> None:
    app()


__all__ = ["app", "main"]
