"""How the settings become Hypercorn's Config and Granian's server options.

The servers themselves run in tests/integration/test_asgi_servers.py; these pin the
mapping, so a changed setting reaches both servers the way it reaches uvicorn and gunicorn.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from slipway.platform.settings import Settings
from slipway.serving import granian_app, hypercorn_app


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        graceful_timeout=12,
        keepalive_timeout=80,
        log_level="WARNING",
    )


def test_hypercorn_config_follows_the_settings(settings: Settings) -> None:
    config = hypercorn_app.build_config(settings, host="::1", port=9000, workers=3)

    assert config.bind == ["[::1]:9000"]
    assert config.workers == 3
    assert config.application_path == "slipway.app:create_app()"
    # Workers stop waiting for requests early enough to close their pools before the
    # supervisor's GRACEFUL_TIMEOUT deadline.
    assert config.graceful_timeout == 10
    assert config.keep_alive_timeout == 80
    assert config.include_server_header is False
    assert config.accesslog is None
    assert config.errorlog is logging.getLogger("hypercorn.error")
    assert config.ssl_enabled is False
    # Workers are spawned: the config crosses a process boundary.
    assert pickle.loads(pickle.dumps(config)).graceful_timeout == 10


def test_hypercorn_tls_offers_h2_then_http11(settings: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    config = hypercorn_app.build_config(
        settings, host="127.0.0.1", port=8443, workers=1, certfile=cert, keyfile=key
    )

    assert config.ssl_enabled is True
    assert config.alpn_protocols == ["h2", "http/1.1"]
    assert (config.certfile, config.keyfile) == (str(cert), str(key))


@pytest.mark.parametrize("module", [hypercorn_app.build_config, granian_app.server_options])
def test_a_certificate_needs_its_key(settings: Settings, tmp_path: Path, module: object) -> None:
    with pytest.raises(ValueError, match="go together"):
        module(  # type: ignore[operator]
            settings, host="127.0.0.1", port=8443, workers=1, certfile=tmp_path / "c.pem"
        )


def test_granian_options_follow_the_settings(settings: Settings) -> None:
    from granian.constants import HTTPModes, Interfaces

    options = granian_app.server_options(settings, host="0.0.0.0", port=9000, workers=4)

    assert options["target"] == "slipway.app:create_app"
    assert options["factory"] is True
    assert options["interface"] is Interfaces.ASGI
    assert options["workers"] == 4
    assert options["http"] is HTTPModes.auto
    # The kill deadline of a worker that does not stop: the whole graceful budget.
    assert options["workers_kill_timeout"] == 12
    assert options["log_access"] is False
    assert options["log_level"] == "warning"
    assert options["respawn_failed_workers"] is True


def test_granian_accepts_the_options() -> None:
    """Every option name is one Granian's server takes (a renamed option fails here)."""
    import inspect

    from granian.server.common import AbstractServer

    accepted = set(inspect.signature(AbstractServer.__init__).parameters)
    options = granian_app.server_options(
        Settings(_env_file=None),  # type: ignore[call-arg]
        host="127.0.0.1",
        port=9000,
        workers=1,
    )
    assert set(options) <= accepted
