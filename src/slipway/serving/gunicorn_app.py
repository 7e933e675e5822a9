"""`slipway serve --server gunicorn`: the gunicorn master runs in this process (no extra
exec), configured from slipway.serving.gunicorn_conf plus the command-line overrides.

Running in-process keeps the PID the container started (exec-form CMD), so SIGTERM from
the orchestrator and SIGHUP from an operator reach the gunicorn master directly.
"""

from __future__ import annotations

import importlib
from typing import Any

from gunicorn.app.base import BaseApplication

CONFIG_MODULE = "slipway.serving.gunicorn_conf"
APP_FACTORY = "slipway.app:create_app"


class GunicornApplication(BaseApplication):  # type: ignore[misc]
    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.overrides = {key: value for key, value in (overrides or {}).items() if value}
        super().__init__()

    def load_config(self) -> None:
        module = importlib.import_module(CONFIG_MODULE)
        settings = self.cfg.settings
        for name, value in vars(module).items():
            if name in settings and value is not None:
                self.cfg.set(name, value)
        for name, value in self.overrides.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        # Called in each worker after fork (preload_app=False): every worker builds its
        # own app, and the lifespan opens its own pools.
        from slipway.app import create_app

        return create_app()


def bind_address(host: str, port: int) -> str:
    """gunicorn's `bind` notation (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(*, bind: str | None = None, workers: int | None = None) -> None:
    """Run the gunicorn master until it is stopped (SIGTERM, SIGINT)."""
    overrides: dict[str, Any] = {"bind": [bind] if bind else None, "workers": workers}
    GunicornApplication(overrides).run()
