"""The gunicorn configuration as gunicorn itself loads it (`--print-config`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.serving.concurrency import available_cpus
from tests.integration.conftest import slipway_env

REPO = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
APP = "slipway.app:create_app()"


def print_config(cwd: Path, *args: str, **env: str) -> dict[str, str]:
    result = subprocess.run(
        [GUNICORN, *args, "--print-config", APP],
        cwd=cwd,
        env=slipway_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            config[name.strip()] = value.strip()
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return print_config(
        tmp_path_factory.mktemp("gunicorn"),
        "-c",
        "python:slipway.serving.gunicorn_conf",
        HOST="0.0.0.0",
        PORT="9123",
        WEB_CONCURRENCY="3",
        GRACEFUL_TIMEOUT="17",
        KEEPALIVE_TIMEOUT="90",
    )


def test_bind_workers_and_timeouts_come_from_the_environment(config: dict[str, str]) -> None:
    assert ast.literal_eval(config["bind"]) == ["0.0.0.0:9123"]
    assert config["workers"] == "3"
    assert config["graceful_timeout"] == "17"
    assert config["keepalive"] == "90"


def test_worker_and_process_settings(config: dict[str, str]) -> None:
    assert config["worker_class"] == "slipway.serving.worker.UvicornWorker"
    assert config["worker_tmp_dir"] == "/dev/shm"
    assert config["preload_app"] == "False"
    assert int(config["max_requests"]) > 0
    assert 0 < int(config["max_requests_jitter"]) < int(config["max_requests"])
    assert config["control_socket_disable"] == "True"
    assert config["accesslog"] == "None"
    for hook in ("on_starting", "child_exit"):
        assert config[hook] == f"<{hook}()>"


def test_default_workers_follow_the_usable_cpus(tmp_path: Path) -> None:
    config = print_config(tmp_path, "-c", "python:slipway.serving.gunicorn_conf")

    assert config["workers"] == str(available_cpus())
    # The defaults: Nginx's upstream idle timeout is 60 s, ours must be above it.
    assert int(config["keepalive"]) > 60


def test_checkout_gunicorn_conf_py_is_picked_up_by_default() -> None:
    """A bare `gunicorn` run from the checkout gets the same configuration."""
    config = print_config(REPO, WEB_CONCURRENCY="4")

    assert config["worker_class"] == "slipway.serving.worker.UvicornWorker"
    assert config["workers"] == "4"


def test_an_invalid_setting_stops_gunicorn_with_a_readable_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [GUNICORN, "-c", "python:slipway.serving.gunicorn_conf", "--check-config", APP],
        cwd=tmp_path,
        env=slipway_env(PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "PORT" in result.stderr
