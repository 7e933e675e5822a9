"""Real servers for tests: PostgreSQL and Redis on loopback, in throwaway directories.

No mocks: each server is the real binary from the OS packages, on a free random port,
torn down with the run (see process.py for the cleanup guarantee).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, make_url

from .ports import LOOPBACK, ReadinessTimeout, free_port, wait_until
from .process import (
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    ManagedProcess,
    ServiceUnavailable,
    apt_install,
    ensure_binary,
    pid_alive,
    register,
    require_or_skip,
    unregister,
)

__all__ = [
    "ExternalPostgres",
    "ExternalRedis",
    "ManagedProcess",
    "PostgresServer",
    "PostgresService",
    "RedisServer",
    "RedisService",
    "ServiceUnavailable",
    "ensure_binary",
    "find_postgres_bindir",
    "require_or_skip",
]

T = TypeVar("T")

PORT_ATTEMPTS = 3


# --- PostgreSQL ---------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _quote_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
    # Fixtures are sync, tests may already be inside an event loop: a private loop in a
    # worker thread serves both without nesting loops.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipway-pg")
    try:
        return pool.submit(lambda: asyncio.run(factory())).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)


class PostgresService:
    """A PostgreSQL server reachable over TCP, whoever started it."""

    def __init__(self, base_url: URL) -> None:
        self._base = base_url

    @property
    def host(self) -> str:
        return self._base.host or LOOPBACK

    @property
    def port(self) -> int:
        return self._base.port or 5432

    @property
    def admin_database(self) -> str:
        """The database administrative statements connect to."""
        return self._base.database or "postgres"

    def url(self, dbname: str | None = None) -> str:
        """SQLAlchemy URL for the app: postgresql+asyncpg://user@host:port/dbname."""
        database = dbname or self.admin_database
        return self._base.set(drivername="postgresql+asyncpg", database=database).render_as_string(
            hide_password=False
        )

    def dsn(self, dbname: str | None = None) -> str:
        """libpq-style DSN, for asyncpg.connect and psql."""
        database = dbname or self.admin_database
        return self._base.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )

    def _call(self, method: str, sql: str, dbname: str | None, timeout: float) -> Any:
        async def run() -> Any:
            connection = await asyncpg.connect(
                self.dsn(dbname), timeout=timeout, command_timeout=timeout
            )
            try:
                return await getattr(connection, method)(sql)
            finally:
                await connection.close(timeout=timeout)

        return _run_coroutine(run, timeout=timeout * 2 + 5)

    def fetchval(self, sql: str, dbname: str | None = None, timeout: float = 30.0) -> Any:
        """First column of the first row of one statement."""
        return self._call("fetchval", sql, dbname, timeout)

    def execute(self, sql: str, dbname: str | None = None, timeout: float = 30.0) -> None:
        """Run one or more statements (simple query protocol)."""
        self._call("execute", sql, dbname, timeout)

    @property
    def version(self) -> str:
        """The server's own version string, e.g. '15.18 (Debian 15.18-0+deb12u1)'."""
        return str(self.fetchval("SHOW server_version"))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (optionally cloned from `template`); return its URL."""
        sql = f"CREATE DATABASE {_quote_identifier(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_identifier(template)}"
        self.execute(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        # FORCE (PostgreSQL 13+) ends sessions a test forgot to close.
        self.execute(f"DROP DATABASE IF EXISTS {_quote_identifier(name)} WITH (FORCE)")

    def close(self) -> None:
        """Release what this object owns (nothing for a server someone else runs)."""


class ExternalPostgres(PostgresService):
    """A server provided from outside (TEST_DATABASE_URL), e.g. a CI service container."""

    def __init__(self, url: str) -> None:
        base = make_url(url)
        super().__init__(base.set(drivername="postgresql", database=base.database or "postgres"))


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))


def find_postgres_bindir() -> Path | None:
    """Newest Debian /usr/lib/postgresql/*/bin, else pg_config --bindir, else PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if debian:
        return debian[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=False
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_bindir() -> Path:
    bindir = find_postgres_bindir()
    if bindir is None and apt_install("postgresql"):
        bindir = find_postgres_bindir()
    if bindir is None:
        raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    return bindir


def _scratch_dir(prefix: str, owner: str | None) -> Path:
    """A private temporary directory, handed to `owner` when we are root."""
    base = Path(tempfile.gettempdir())
    if owner is not None and not all(p.stat().st_mode & 0o001 for p in [base, *base.parents]):
        # The system user must be able to reach its data directory.
        base = Path("/tmp")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    if owner is not None:
        shutil.chown(path, user=owner, group=owner)
    return path


class PostgresServer(PostgresService):
    """A private PostgreSQL cluster: initdb into a temp dir, pg_ctl start/stop/restart."""

    SYSTEM_USER = "postgres"

    def __init__(
        self, *, bindir: Path | None = None, startup_timeout: float = STARTUP_TIMEOUT
    ) -> None:
        super().__init__(
            URL.create(
                "postgresql",
                username="postgres",
                host=LOOPBACK,
                port=free_port(),
                database="postgres",
            )
        )
        self.bindir = bindir or postgres_bindir()
        self.startup_timeout = startup_timeout
        # initdb and postgres refuse to run as root.
        self._run_as = self.SYSTEM_USER if os.geteuid() == 0 else None
        self.root: Path | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _command(self, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        if self._run_as is not None:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        return subprocess.run(
            argv, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    def _initdb(self) -> None:
        if self._run_as is not None and shutil.which("runuser") is None:
            raise ServiceUnavailable(
                "running as root needs runuser to start PostgreSQL as 'postgres'"
            )
        self.root = _scratch_dir("slipway-pg-", self._run_as)
        (self.root / "sock").mkdir()
        if self._run_as is not None:
            shutil.chown(self.root / "sock", user=self._run_as, group=self._run_as)
        register(self, self.close)
        result = self._command(
            "initdb",
            "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
            timeout=self.startup_timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceUnavailable(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# slipway test cluster: loopback only, durability traded for speed\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root / 'sock'}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )

    def start(self) -> Self:
        if self.root is None:
            self._initdb()
        if self.is_running():
            return self
        for attempt in range(PORT_ATTEMPTS):
            result = self._command(
                "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path),
                "-w", "-t", str(int(self.startup_timeout)), "-o", f"-p {self.port}",
                timeout=self.startup_timeout + 10,
            )  # fmt: skip
            if result.returncode == 0:
                return self
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if "already in use" in log and attempt + 1 < PORT_ATTEMPTS:
                # Someone took the port between free_port() and our bind: take another.
                self._base = self._base.set(port=free_port())
                continue
            raise ServiceUnavailable(f"pg_ctl start failed:\n{result.stderr}\n{log[-4000:]}")
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m smart|fast|immediate; SIGKILL the postmaster if that fails."""
        if self.root is None or not self.is_running():
            return
        self._command(
            "pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(STOP_TIMEOUT)),
            timeout=STOP_TIMEOUT + 10,
        )  # fmt: skip
        pid = self._postmaster_pid()
        if pid is not None and self.is_running():
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not self.is_running(), timeout=STOP_TIMEOUT, what="postmaster exit")

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first_line)
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self._postmaster_pid()
        # A killed postmaster leaves its pid file and may linger as a zombie for a while.
        return pid is not None and pid_alive(pid)

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        try:
            if self.root is not None:
                self.stop(mode="immediate")
        finally:
            unregister(self)
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- Redis --------------------------------------------------------------------------------


class RedisError(RuntimeError):
    """An error reply from Redis."""


class RedisService:
    """A Redis server reachable over TCP, whoever started it."""

    def __init__(
        self, host: str, port: int, username: str | None = None, password: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password

    def url(self, db: int = 0) -> str:
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def command(self, *args: str, timeout: float = 5.0) -> Any:
        """Send one command and return its decoded reply.

        Just enough RESP for readiness and self-checks, so the harness needs no client
        library of its own; the app's tests use the app's Redis client.
        """
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            stream = sock.makefile("rwb")
            commands: list[tuple[str, ...]] = []
            if self.password is not None:
                user = [self.username] if self.username else []
                commands.append(("AUTH", *user, self.password))
            commands.append(args)
            for cmd in commands:
                stream.write(f"*{len(cmd)}\r\n".encode())
                for arg in cmd:
                    data = arg.encode()
                    stream.write(b"$%d\r\n%s\r\n" % (len(data), data))
            stream.flush()
            reply: Any = None
            for _ in commands:
                reply = _read_reply(stream)
            return reply

    def ping(self) -> bool:
        try:
            return bool(self.command("PING", timeout=1.0) == "PONG")
        except (OSError, RedisError):
            return False

    @property
    def version(self) -> str:
        info = str(self.command("INFO", "server"))
        match = re.search(r"^redis_version:(\S+)", info, re.MULTILINE)
        return match.group(1) if match else "unknown"

    def close(self) -> None:
        """Release what this object owns (nothing for a server someone else runs)."""


def _read_reply(stream: Any) -> Any:
    line: bytes = stream.readline()
    if not line:
        raise OSError("connection closed by redis")
    kind, body = line[:1], line[1:].rstrip(b"\r\n").decode()
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        length = int(body)
        return None if length < 0 else stream.read(length + 2)[:-2].decode()
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise RedisError(f"unexpected reply: {line!r}")


class ExternalRedis(RedisService):
    """A server provided from outside (TEST_REDIS_URL)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        super().__init__(
            parts.hostname or LOOPBACK,
            parts.port or 6379,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None,
        )


class RedisServer(RedisService):
    """A private redis-server: no persistence, loopback only, in its own temp dir."""

    def __init__(
        self, *, binary: str | None = None, startup_timeout: float = STARTUP_TIMEOUT
    ) -> None:
        super().__init__(LOOPBACK, free_port())
        found = binary or ensure_binary("redis-server", "redis-server")
        if found is None:
            raise ServiceUnavailable("redis-server not found")
        self.binary = found
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.process: ManagedProcess | None = None

    def start(self) -> Self:
        if self.is_running():
            return self
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="slipway-redis-"))
            register(self, self.close)
        for attempt in range(PORT_ATTEMPTS):
            if self.process is not None:
                self.process.close()
            self.process = ManagedProcess(
                [
                    self.binary, "--port", str(self.port), "--bind", LOOPBACK,
                    "--save", "", "--appendonly", "no", "--dir", str(self.root),
                    "--daemonize", "no", "--logfile", "",
                ],
                name="redis-server",
                log_path=self.root / "redis.log",
            ).start()  # fmt: skip
            try:
                self.process.wait_until(
                    self.ping, what=f"redis PING on {self.port}", timeout=self.startup_timeout
                )
                return self
            except ReadinessTimeout as error:
                log = self.process.log_text()
                self.process.close()
                if "already in use" in log and attempt + 1 < PORT_ATTEMPTS:
                    self.port = free_port()
                    continue
                raise ServiceUnavailable(str(error)) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def close(self) -> None:
        try:
            if self.process is not None:
                self.process.close()
        finally:
            unregister(self)
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
