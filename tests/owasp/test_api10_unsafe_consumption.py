"""OWASP API10:2023 Unsafe Consumption of APIs: every outbound call is bounded in time.

Two proofs:
- a scan of `src/` finds every client construction and outbound call; each must pass its
  timeout arguments, or be listed in docs/security/outbound-calls.md as running without one
  (with the reason), and every call site must appear in that page;
- the clients in the request path are pointed at a server that accepts connections and
  never answers: each gives up within its bound instead of hanging.
"""

from __future__ import annotations

import ast
import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from slipway.cli.healthcheck import probe as healthcheck_probe
from slipway.platform.db.engine import create_engine
from slipway.platform.mail.sender import SmtpMailer
from slipway.platform.services import create_redis
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "slipway"
DOC = REPO / "docs" / "security" / "outbound-calls.md"

#: Callee (as written, dotted) -> keyword arguments that bound it. An empty tuple means the
#: bound is not a keyword of this call (it is proven by a black-hole test below, or the call
#: is documented as unbounded).
CLIENTS: dict[str, tuple[str, ...]] = {
    "Redis.from_url": ("socket_connect_timeout", "socket_timeout"),
    "Redis": ("socket_connect_timeout", "socket_timeout"),
    "aiosmtplib.send": ("timeout",),
    "aiosmtplib.SMTP": ("timeout",),
    "boto3.client": ("config",),
    "httpx.AsyncClient": ("timeout",),
    "httpx.Client": ("timeout",),
    "urllib.request.urlopen": ("timeout",),
    "socket.create_connection": ("timeout",),
    "requests.get": ("timeout",),
    "requests.post": ("timeout",),
    "OTLPSpanExporter": (),
    "create_async_engine": (),
    "asyncpg.connect": ("timeout",),
    "sentry_sdk.init": (),
    "Celery": (),
    "loop.getaddrinfo": (),
}
#: cashews `Cache.setup(url, ...)` with a Redis URL: same keywords as a Redis client.
CASHEWS_REDIS = ("socket_connect_timeout", "socket_timeout")


@dataclass(frozen=True)
class CallSite:
    path: str  # relative to the repository
    callee: str
    line: int
    keywords: frozenset[str]


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return None


def outbound_calls() -> list[CallSite]:
    sites: list[CallSite] = []
    for file in sorted(SRC.rglob("*.py")):
        tree = ast.parse(file.read_text(), filename=str(file))
        rel = str(file.relative_to(REPO))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func) or ""
            keywords = frozenset(k.arg for k in node.keywords if k.arg)
            if name in CLIENTS:
                sites.append(CallSite(rel, name, node.lineno, keywords))
            elif name.endswith(".setup") and node.args:
                first = node.args[0]
                in_memory = isinstance(
                    first, ast.Constant | ast.JoinedStr
                ) and "mem://" in ast.unparse(first)
                if not in_memory:
                    sites.append(CallSite(rel, "Cache.setup", node.lineno, keywords))
    return sites


def _documented() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(call site, client) rows of the bounded table and of the unbounded table."""
    text = DOC.read_text()
    bounded_part, _, unbounded_part = text.partition("## Without a timeout of ours")
    row = re.compile(r"^\| `([^`]+)` \| ([^|]+)\|", re.MULTILINE)

    def rows(part: str) -> set[tuple[str, str]]:
        return {(m.group(1), m.group(2).strip()) for m in row.finditer(part)}

    return rows(bounded_part), rows(unbounded_part)


def _names(client_cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", client_cell))


def test_the_scan_finds_the_known_clients() -> None:
    callees = {site.callee for site in outbound_calls()}

    assert {"Redis.from_url", "aiosmtplib.send", "boto3.client", "create_async_engine"} <= callees
    assert "Cache.setup" in callees


def test_every_outbound_call_is_documented() -> None:
    bounded, unbounded = _documented()
    documented = {(path, name) for path, cell in bounded | unbounded for name in _names(cell)}

    missing = [
        f"{site.path}:{site.line} {site.callee}"
        for site in outbound_calls()
        if not any(
            path == site.path and site.callee.split(".")[-1] in name for path, name in documented
        )
    ]
    assert missing == [], f"add these to {DOC.relative_to(REPO)}: {missing}"


def test_every_bounded_call_passes_its_timeouts() -> None:
    _bounded, unbounded = _documented()
    unbounded_sites = {(path, name) for path, cell in unbounded for name in _names(cell)}

    unbounded_calls = []
    for site in outbound_calls():
        required = CASHEWS_REDIS if site.callee == "Cache.setup" else CLIENTS[site.callee]
        if any(
            path == site.path and site.callee.split(".")[-1] in name
            for path, name in unbounded_sites
        ):
            continue
        if not set(required) <= site.keywords:
            unbounded_calls.append(
                f"{site.path}:{site.line} {site.callee} lacks {set(required) - site.keywords}"
            )
    assert unbounded_calls == []


def test_the_unbounded_calls_are_explained() -> None:
    text = DOC.read_text().partition("## Without a timeout of ours")[2]

    assert "Celery" in text
    assert "socket_timeout" in text  # the concrete fix for the broker gap is written down


# --- black holes -----------------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        server.close()


def _elapsed(start: float) -> float:
    return time.monotonic() - start


async def test_postgres_connections_give_up(black_hole: int) -> None:
    settings = make_settings(
        database_url=f"postgresql+asyncpg://app@127.0.0.1:{black_hole}/slipway", db_pool_timeout=1.0
    )
    engine = create_engine(settings)
    start = time.monotonic()
    try:
        with pytest.raises((TimeoutError, OSError)):
            async with asyncio.timeout(15), engine.connect():
                pass
    finally:
        await engine.dispose()

    assert _elapsed(start) < 5


async def test_redis_commands_give_up(black_hole: int) -> None:
    redis = create_redis(f"redis://127.0.0.1:{black_hole}/0")
    start = time.monotonic()
    try:
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            async with asyncio.timeout(15):
                await redis.ping()
    finally:
        await redis.aclose()

    assert _elapsed(start) < 5


async def test_smtp_gives_up(black_hole: int) -> None:
    settings = make_settings(
        smtp_host="127.0.0.1", smtp_port=black_hole, smtp_timeout=1.0, smtp_starttls=False
    )
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    message.set_content("x")
    start = time.monotonic()

    with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
        async with asyncio.timeout(15):
            await SmtpMailer(settings).send(message)

    assert _elapsed(start) < 5


def test_the_container_healthcheck_gives_up(black_hole: int) -> None:
    start = time.monotonic()

    healthy, reason = healthcheck_probe(f"http://127.0.0.1:{black_hole}/health/ready", 1.0)

    assert not healthy
    assert "timed out" in reason.lower() or "timeout" in reason.lower()
    assert _elapsed(start) < 5
