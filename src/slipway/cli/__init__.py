"""The `slipway` command line (typer)."""

from __future__ import annotations

from slipway.cli import serve as _serve
from slipway.cli.common import app

# Importing the command modules registers their commands on `app`.
_ = _serve


def main() -> None:
    app()


__all__ = ["app", "main"]
