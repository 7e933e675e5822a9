"""Database backup and restore: `slipway db backup` / `slipway db restore`.

- PostgreSQL: pg_dump's custom format (compressed, restorable selectively and in any
  order by pg_restore). Connection parameters go to the tools through libpq's PG*
  environment variables: the password never appears in argv, where `ps` would show it.
- SQLite: the online backup API (`sqlite3.Connection.backup`), which copies a consistent
  snapshot page by page while the application keeps writing; the backup file is itself a
  SQLite database.

Restores refuse a target that already has tables unless `force` is given (then
PostgreSQL objects are dropped first, and a SQLite file is overwritten): restoring over a
live database by accident is the mistake this guards against.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url

from slipway.platform.db.engine import create_engine
from slipway.platform.settings import Settings

PG_MAGIC = b"PGDMP"
SQLITE_MAGIC = b"SQLite format 3\x00"
#: SQLite pages copied per step: small enough to let writers in between steps.
SQLITE_PAGES_PER_STEP = 256
TOOL_TIMEOUT = 6 * 3600
_PG_TABLE_LINE = re.compile(
    r"(?:dumping contents of table|processing data for table) \"?([^\"]+)\"?"
)

Backend = Literal["postgresql", "sqlite"]


class BackupError(RuntimeError):
    """A backup or restore could not be done; the message says why, without secrets."""


class Progress(Protocol):
    """What the CLI shows: a total, steps done, and what is being copied."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, completed: int, description: str | None = None) -> None: ...


class NoProgress:
    def start(self, total: int | None, description: str) -> None:
        return None

    def advance(self, completed: int, description: str | None = None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    backend: Backend
    size_bytes: int
    seconds: float


def backend_of(settings: Settings) -> Backend:
    return "sqlite" if settings.is_sqlite else "postgresql"


def default_filename(settings: Settings, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    suffix = "sqlite3" if settings.is_sqlite else "dump"
    return f"slipway-{stamp}.{suffix}"


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups this tool wrote in `directory`."""
    backups = sorted(
        (*directory.glob("slipway-*.dump"), *directory.glob("slipway-*.sqlite3")),
        key=lambda path: path.name,
    )
    doomed = backups[:-keep] if keep > 0 else backups
    for path in doomed:
        path.unlink()
    return doomed


# --- PostgreSQL -----------------------------------------------------------------------------


def find_pg_tool(name: str, settings: Settings) -> str:
    """BACKUP_PG_BIN_DIR, else the newest Debian /usr/lib/postgresql/*/bin, else PATH.

    pg_dump refuses servers newer than itself, so the newest installed one is the best bet.
    """
    if settings.backup_pg_bin_dir is not None:
        candidate = settings.backup_pg_bin_dir / name
        if not candidate.is_file():
            raise BackupError(f"{name} not found in BACKUP_PG_BIN_DIR={settings.backup_pg_bin_dir}")
        return str(candidate)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version)
    if debian:
        return str(debian[-1])
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools")
    return found


def libpq_environment(url: URL) -> dict[str, str]:
    """PG* variables for `url` (password included): for the tools' environment only."""
    env: dict[str, str] = {}
    pairs = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password if url.password is None else str(url.password),
        "PGDATABASE": url.database,
    }
    env.update({key: value for key, value in pairs.items() if value})
    ssl = url.query.get("ssl") or url.query.get("sslmode")
    if isinstance(ssl, str):
        # asyncpg's `ssl=` takes libpq's sslmode names (normalise_database_url maps them).
        env["PGSSLMODE"] = ssl
    return env


def pg_command(tool: str, args: list[str], settings: Settings) -> tuple[list[str], dict[str, str]]:
    """argv and environment for a PostgreSQL client tool against DATABASE_URL."""
    url = make_url(settings.database_url)
    env = {**os.environ, **libpq_environment(url)}
    # The tools connect with libpq: no driver suffix, and none of the app's own pool
    # settings apply.
    return [find_pg_tool(tool, settings), *args], env


def _run_pg_tool(argv: list[str], env: dict[str, str], on_line: Callable[[str], None]) -> None:
    with subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        errors: list[str] = []
        for line in process.stderr:
            on_line(line.rstrip())
            if "error" in line.lower() or "fatal" in line.lower():
                errors.append(line.strip())
        code = process.wait(timeout=TOOL_TIMEOUT)
    if code != 0:
        detail = "\n".join(errors[-5:]) or f"exit status {code}"
        raise BackupError(f"{Path(argv[0]).name} failed: {detail}")


async def _table_names(settings: Settings) -> list[str]:
    engine = create_engine(settings, null_pool=True)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()


def _count_table_lines(line: str, progress: Progress, done: list[int]) -> None:
    match = _PG_TABLE_LINE.search(line)
    if match:
        done[0] += 1
        progress.advance(done[0], match.group(1))


def _backup_postgres(settings: Settings, target: Path, progress: Progress) -> None:
    tables = asyncio.run(_table_names(settings))
    progress.start(len(tables), "pg_dump")
    argv, env = pg_command(
        "pg_dump",
        ["--format=custom", "--no-owner", "--no-privileges", "--verbose", f"--file={target}"],
        settings,
    )
    done = [0]
    _run_pg_tool(argv, env, lambda line: _count_table_lines(line, progress, done))


def _restore_postgres(settings: Settings, source: Path, progress: Progress, force: bool) -> None:
    listing, env = pg_command("pg_restore", ["--list", str(source)], settings)
    result = subprocess.run(
        listing, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise BackupError(f"{source} is not a readable pg_dump archive: {result.stderr.strip()}")
    data_entries = sum(1 for line in result.stdout.splitlines() if " TABLE DATA " in line)
    database = make_url(settings.database_url).database or ""
    args = [
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        # All or nothing: a failed restore leaves the target as it was.
        "--single-transaction",
        "--verbose",
        f"--dbname={database}",
    ]
    if force:
        args += ["--clean", "--if-exists"]
    progress.start(data_entries, "pg_restore")
    argv, env = pg_command("pg_restore", [*args, str(source)], settings)
    done = [0]
    _run_pg_tool(argv, env, lambda line: _count_table_lines(line, progress, done))


# --- SQLite ---------------------------------------------------------------------------------


def sqlite_path(settings: Settings) -> Path:
    database = make_url(settings.database_url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise BackupError("DATABASE_URL is an in-memory SQLite database: nothing to back up")
    return Path(database)


def _sqlite_copy(source: Path, target: Path, progress: Progress, description: str) -> None:
    def step(_status: int, remaining: int, total: int) -> None:
        if not started[0]:
            progress.start(total, description)
            started[0] = True
        progress.advance(total - remaining)

    started = [False]
    # Read-only on the source: a backup must never create or change it. (A sqlite3
    # connection's own context manager commits but does not close: hence closing().)
    with (
        closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst, pages=SQLITE_PAGES_PER_STEP, progress=step)


def _sqlite_tables(path: Path) -> list[str]:
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return [str(row[0]) for row in rows]


# --- entry points ---------------------------------------------------------------------------


def _check_magic(path: Path, backend: Backend) -> None:
    magic = PG_MAGIC if backend == "postgresql" else SQLITE_MAGIC
    with path.open("rb") as handle:
        head = handle.read(len(magic))
    if head != magic:
        other = "SQLite" if backend == "postgresql" else "pg_dump custom-format"
        raise BackupError(
            f"{path} is not a {backend} backup"
            + (
                f" (it looks like a {other} file)"
                if head[:5] in (PG_MAGIC, SQLITE_MAGIC[:5])
                else ""
            )
        )


def _partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def backup(settings: Settings, target: Path, progress: Progress | None = None) -> BackupResult:
    """Write a backup of DATABASE_URL to `target` (atomically: complete or absent)."""
    progress = progress or NoProgress()
    backend = backend_of(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise BackupError(f"{target} exists; backups are never overwritten")
    partial = _partial_path(target)
    partial.unlink(missing_ok=True)
    # Owner-only from the first byte: a backup holds password hashes and personal data.
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    started = time.monotonic()
    try:
        if backend == "postgresql":
            _backup_postgres(settings, partial, progress)
        else:
            source = sqlite_path(settings)
            if not source.is_file():
                raise BackupError(f"the SQLite database {source} does not exist")
            _sqlite_copy(source, partial, progress, "sqlite backup")
        # Only a complete file gets the final name: a crash leaves a .partial behind, never
        # a truncated backup that looks good.
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(target, backend, target.stat().st_size, time.monotonic() - started)


def restore(
    settings: Settings, source: Path, progress: Progress | None = None, *, force: bool = False
) -> float:
    """Restore `source` into DATABASE_URL; returns the seconds it took."""
    progress = progress or NoProgress()
    backend = backend_of(settings)
    if not source.is_file():
        raise BackupError(f"{source} does not exist")
    _check_magic(source, backend)
    started = time.monotonic()
    if backend == "postgresql":
        existing = asyncio.run(_table_names(settings))
        if existing and not force:
            raise BackupError(
                f"the target database has {len(existing)} tables; restore into an empty "
                "database, or pass --force to drop and replace them"
            )
        _restore_postgres(settings, source, progress, force)
    else:
        target = sqlite_path(settings)
        if _sqlite_tables(target) and not force:
            raise BackupError(
                f"{target} already has tables; restore into a new file, or pass --force to "
                "replace it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(source, target, progress, "sqlite restore")
    return time.monotonic() - started
