"""Self-tests of the real-service harness: servers start, serve, restart, stop and leave
nothing behind; the plugin's fixtures and header work in a fresh pytest session."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from .ports import ReadinessTimeout, free_port, port_is_open
from .process import pid_alive
from .services import (
    ManagedProcess,
    PostgresServer,
    RedisServer,
    ServiceUnavailable,
    ensure_binary,
    find_postgres_bindir,
    require_or_skip,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def _private_postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    with server:
        yield server


# Starting a cluster costs about two seconds: tests that leave the server running share one.
pg = pytest.fixture(scope="module")(_private_postgres)
fresh_pg = pytest.fixture(_private_postgres)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    with server:
        yield server


# --- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_serves_a_created_database_to_asyncpg(pg: PostgresServer) -> None:
    url = pg.create_database("harness_check")

    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/harness_check"
    assert re.match(r"^\d+(\.\d+)? ", pg.version + " ")

    async def roundtrip() -> str:
        connection = await asyncpg.connect(pg.dsn("harness_check"), timeout=10)
        try:
            await connection.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (40), (2)")
            return str(
                await connection.fetchval("SELECT current_database() || ':' || sum(v) FROM t")
            )
        finally:
            await connection.close()

    assert asyncio.run(roundtrip()) == "harness_check:42"

    pg.drop_database("harness_check")
    assert pg.fetchval("SELECT count(*) FROM pg_database WHERE datname = 'harness_check'") == 0


def test_postgres_clones_a_template_database(pg: PostgresServer) -> None:
    pg.create_database("tmpl")
    pg.execute("CREATE TABLE migrated (id int)", dbname="tmpl")

    pg.create_database("clone", template="tmpl")

    assert pg.fetchval("SELECT to_regclass('migrated') IS NOT NULL", dbname="clone") is True
    pg.drop_database("clone")
    pg.drop_database("tmpl")


def test_postgres_rejects_database_names_that_need_quoting(pg: PostgresServer) -> None:
    with pytest.raises(ValueError, match="not a plain database name"):
        pg.create_database('x"; DROP DATABASE postgres; --')


def test_postgres_keeps_data_across_restart_and_refuses_connections_when_stopped(
    fresh_pg: PostgresServer,
) -> None:
    pg = fresh_pg
    pg.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
    port = pg.port

    pg.restart()

    assert pg.is_running()
    assert pg.port == port
    assert pg.fetchval("SELECT v FROM kept") == "survives"

    pg.stop()

    assert not pg.is_running()
    assert not port_is_open("127.0.0.1", port)
    with pytest.raises(OSError):
        pg.fetchval("SELECT 1", timeout=5)

    pg.start()
    assert pg.fetchval("SELECT v FROM kept") == "survives"


def test_postgres_listens_only_on_loopback_and_runs_unprivileged(pg: PostgresServer) -> None:
    assert pg.fetchval("SHOW listen_addresses") == "127.0.0.1"
    assert pg.fetchval("SHOW fsync") == "off"
    assert pg.root is not None
    assert pg.fetchval("SHOW unix_socket_directories") == str(pg.root / "sock")
    pid = pg._postmaster_pid()
    assert pid is not None
    uid_line = next(
        line
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    assert int(uid_line.split()[1]) != 0


def test_postgres_close_removes_process_and_data_directory() -> None:
    try:
        server = PostgresServer().start()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    root, pid = server.root, server._postmaster_pid()
    assert root is not None
    assert pid is not None
    assert pid_alive(pid)

    server.close()

    assert not root.exists()
    assert not pid_alive(pid)


# --- Redis --------------------------------------------------------------------------------


def test_redis_answers_and_forgets_everything_on_restart(redis: RedisServer) -> None:
    port = redis.port
    assert redis.command("PING") == "PONG"
    assert redis.url(3) == f"redis://127.0.0.1:{port}/3"
    assert re.match(r"^\d+\.\d+", redis.version)
    assert redis.command("SET", "key", "value") == "OK"
    assert redis.command("GET", "key") == "value"

    redis.stop()

    assert not redis.is_running()
    assert not redis.ping()
    assert not port_is_open("127.0.0.1", port)

    redis.restart()

    assert redis.port == port
    assert redis.ping()
    # --save "" and --appendonly no: a restarted test Redis starts empty.
    assert redis.command("GET", "key") is None


def test_redis_close_removes_process_and_directory() -> None:
    try:
        server = RedisServer().start()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    assert server.process is not None
    root, pid = server.root, server.process.pid
    assert root is not None

    server.close()

    assert not root.exists()
    assert not pid_alive(pid)


# --- ManagedProcess -----------------------------------------------------------------------


def test_managed_process_waits_for_http_and_keeps_a_log(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    process = ManagedProcess(argv, name="http-server", cwd=tmp_path)

    with process:
        process.wait_for_http(f"http://127.0.0.1:{port}/", timeout=30)
        process.wait_until(lambda: '"GET / HTTP/1.1" 200' in process.log_text(), "access log line")
        log_path = process.log_path

    assert not process.is_running()
    assert not port_is_open("127.0.0.1", port)
    assert not log_path.exists()


def test_managed_process_reports_an_early_exit_with_its_log() -> None:
    code = "import sys; print('boom: bad config', flush=True); sys.exit(3)"
    with ManagedProcess([sys.executable, "-c", code], name="crasher") as process:
        with pytest.raises(ReadinessTimeout, match="boom: bad config"):
            process.wait_for_port(free_port(), timeout=30)
        assert process.returncode == 3


def test_managed_process_stop_is_graceful_first() -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    with ManagedProcess([sys.executable, "-c", code], name="graceful") as process:
        process.wait_until(lambda: "ready" in process.log_text(), "ready line")
        assert process.stop(timeout=10) == 0


def test_managed_process_stop_kills_the_whole_group_when_sigterm_is_ignored() -> None:
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    parent = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    with ManagedProcess([sys.executable, "-c", parent], name="stubborn") as process:
        process.wait_until(lambda: process.log_text().strip().isdigit(), "child pid")
        child_pid = int(process.log_text())
        assert pid_alive(child_pid)

        assert process.stop(timeout=1) == -signal.SIGKILL

    assert not pid_alive(child_pid)


ORPHAN_SCRIPT = """
import sys, time
from tests.support.services import PostgresServer
server = PostgresServer().start()
print(server._postmaster_pid(), server.root, flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)
time.sleep(600)
"""


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_a_run_that_ends_without_closing_leaves_no_server_behind(ending: str) -> None:
    if find_postgres_bindir() is None:
        require_or_skip("PostgreSQL server binaries not installed")
    with ManagedProcess([sys.executable, "-c", ORPHAN_SCRIPT, ending], cwd=REPO_ROOT) as run:
        run.wait_until(lambda: len(run.log_text().split()) >= 2, "server started", timeout=60)
        pid_text, root_text = run.log_text().split()[:2]
        if ending == "sigterm":
            run.send_signal(signal.SIGTERM)
        returncode = run.wait(timeout=60)
        log = run.log_text()

    assert returncode == (0 if ending == "exit" else -signal.SIGTERM), log
    assert not pid_alive(int(pid_text))
    assert not Path(root_text).exists()


# --- helpers --------------------------------------------------------------------------------


def test_require_or_skip_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no postgres"):
        require_or_skip("no postgres")

    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no postgres"):
        require_or_skip("no postgres")


def test_ensure_binary_finds_installed_tools_and_never_installs_when_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIPWAY_NO_APT", "1")
    sh = ensure_binary("sh", "dash")
    assert sh is not None
    assert os.access(sh, os.X_OK)
    assert ensure_binary("slipway-no-such-binary", "slipway-no-such-package") is None


# --- the pytest plugin, in a fresh session ----------------------------------------------------

INNER_TEST = textwrap.dedent(
    """
    def test_services(postgres_server, redis_server):
        url = postgres_server.create_database("plugin_check")
        assert url.startswith("postgresql+asyncpg://")
        assert postgres_server.fetchval("SELECT current_database()", dbname="plugin_check") == "plugin_check"
        postgres_server.drop_database("plugin_check")
        assert redis_server.command("PING") == "PONG"
        print("PORTS", postgres_server.port, redis_server.port)
    """
)


def _run_inner_session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CI", "TEST_DATABASE_URL", "TEST_REDIS_URL"}
    }
    clean.pop("SLIPWAY_NO_SERVICES", None)
    return subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "tests.support.plugin", "-p", "no:cacheprovider", "-p", "no:asyncio",
            "--rootdir", str(tmp_path), "-s", str(tmp_path / "test_inner.py"),
        ],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )  # fmt: skip


def test_plugin_starts_services_and_reports_their_versions(tmp_path: Path) -> None:
    result = _run_inner_session(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^postgresql: \d+\.\d+.*, redis: \d+\.\d+", result.stdout, re.MULTILINE), (
        result.stdout
    )
    assert "1 passed" in result.stdout


def test_plugin_uses_external_services_from_the_environment(
    tmp_path: Path, pg: PostgresServer, redis: RedisServer
) -> None:
    result = _run_inner_session(
        tmp_path, TEST_DATABASE_URL=pg.dsn("postgres"), TEST_REDIS_URL=redis.url(0)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PORTS {pg.port} {redis.port}" in result.stdout


def test_plugin_skips_without_a_service_but_fails_under_ci(
    tmp_path: Path, pg: PostgresServer
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"

    local = _run_inner_session(tmp_path, TEST_DATABASE_URL=pg.dsn(), TEST_REDIS_URL=dead_redis)
    under_ci = _run_inner_session(
        tmp_path, TEST_DATABASE_URL=pg.dsn(), TEST_REDIS_URL=dead_redis, CI="true"
    )

    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout
    # pytest.fail in a fixture reports an error, which fails the run all the same.
    assert under_ci.returncode == 1, under_ci.stdout
    assert "1 error" in under_ci.stdout
    assert "redis unavailable" in under_ci.stdout
