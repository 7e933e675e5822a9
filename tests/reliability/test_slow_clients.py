"""Slow clients (slowloris senders and slow readers) against Nginx and against gunicorn."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import time
from dataclasses import dataclass

import pytest

from tests.reliability.conftest import Figures
from tests.reliability.load import GetJson, LoadGenerator
from tests.reliability.support import ProxiedShop
from tests.support.ports import LOOPBACK

SLOWLORIS_CONNECTIONS = 200
#: Each slowloris connection sends one more header byte this often, and never ends its headers.
TRICKLE_SECONDS = 0.5
SLOW_READERS = 10
#: Slow readers take 256 bytes every 0.25 s (1 KiB/s) through a 4 KiB receive buffer, of a
#: response (the OpenAPI document, ~100 KiB) that the server cannot push out in one go.
READ_CHUNK = 256
READ_PAUSE_SECONDS = 0.25
RECEIVE_BUFFER = 4096
LARGE_PATH = "/openapi.json"
BASELINE_SECONDS = 3.0
ATTACK_SECONDS = 8.0
P99_LIMIT_SECONDS = 1.0


@dataclass
class Target:
    name: str
    host: str
    port: int
    ssl: ssl.SSLContext | None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


@dataclass
class AttackReport:
    opened: int = 0
    refused: int = 0
    #: Connections the server closed (or reset) while the attack ran.
    closed_by_server: int = 0
    bytes_sent: int = 0
    bytes_read: int = 0


async def _open(
    target: Target, source: str, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            # Before connect, so the advertised window is small from the first segment.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (target.host, target.port))
        # limit: the stream stops reading from the socket beyond 2 x 1 KiB unread bytes.
        return await asyncio.open_connection(
            sock=sock,
            ssl=target.ssl,
            server_hostname=target.host if target.ssl else None,
            limit=1024,
        )
    except BaseException:
        sock.close()
        raise


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout=2)


async def slowloris(
    target: Target, report: AttackReport, stop: asyncio.Event, opened: asyncio.Event
) -> None:
    """One connection that sends a request head byte by byte and never finishes it."""
    try:
        reader, writer = await _open(target, "127.0.0.200")
    except OSError:
        report.refused += 1
        return
    report.opened += 1
    if report.opened + report.refused == SLOWLORIS_CONNECTIONS:
        opened.set()
    trickle = itertools.cycle(b"X-Padding: slowloris\r\n")
    try:
        writer.write(b"GET /api/v1/products/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while not stop.is_set():
            writer.write(bytes([next(trickle)]))
            await writer.drain()
            report.bytes_sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TRICKLE_SECONDS)
            if reader.at_eof():
                report.closed_by_server += 1
                return
    except (OSError, ssl.SSLError):
        report.closed_by_server += 1
    finally:
        await _close(writer)


async def slow_reader(target: Target, report: AttackReport, stop: asyncio.Event) -> None:
    """One request for a large response, read at 1 KiB/s through a small window."""
    reader, writer = await _open(target, "127.0.0.210", receive_buffer=RECEIVE_BUFFER)
    try:
        writer.write(f"GET {LARGE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        while not stop.is_set():
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                report.closed_by_server += 1
                return
            report.bytes_read += len(chunk)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=READ_PAUSE_SECONDS)
    except (OSError, ssl.SSLError):
        report.closed_by_server += 1
    finally:
        await _close(writer)


def _target(name: str, stack: ProxiedShop) -> Target:
    if name == "nginx":
        return Target(name, LOOPBACK, stack.proxy.stack.https_port, stack.proxy.ssl_context())
    return Target(name, LOOPBACK, stack.servers[0].port, None)


@pytest.mark.parametrize("target_name", ["nginx", "gunicorn"])
async def test_slow_clients_do_not_starve_others(
    proxied_shop: ProxiedShop, figures: Figures, target_name: str
) -> None:
    """Claim: 200 slowloris connections (request heads sent a byte at a time, never
    finished) and 10 slow readers (a ~100 KiB response read at 1 KiB/s) do not starve other
    clients: their product reads all succeed with p99 under 1 s. Checked through Nginx
    (the production path: Nginx absorbs both) and straight against gunicorn's port (the
    app server alone: uvicorn's event loop parks each slow connection)."""
    target = _target(target_name, proxied_shop)
    shop = proxied_shop.shop
    loris, readers = AttackReport(), AttackReport()
    stop, all_open = asyncio.Event(), asyncio.Event()
    async with LoadGenerator(
        target.base_url,
        [[GetJson("product", shop.product_paths())] for _ in range(6)],
        verify=target.ssl or False,
        max_seconds=BASELINE_SECONDS + ATTACK_SECONDS + 30,
        first_address=160,
    ) as load:
        await asyncio.sleep(BASELINE_SECONDS)
        attackers = [
            asyncio.create_task(slowloris(target, loris, stop, all_open))
            for _ in range(SLOWLORIS_CONNECTIONS)
        ]
        attackers += [
            asyncio.create_task(slow_reader(target, readers, stop)) for _ in range(SLOW_READERS)
        ]
        await asyncio.wait_for(all_open.wait(), timeout=30)
        attack_started = time.monotonic()
        await asyncio.sleep(ATTACK_SECONDS)
        open_at_end = loris.opened - loris.closed_by_server
        stop.set()
        await asyncio.gather(*attackers)
    report = load.report

    under_attack = [a for a in report.of("product") if a.started >= attack_started]
    figures(
        f"slow clients via {target_name}",
        reads=report.sent(),
        reads_under_attack=len(under_attack),
        failed=len(report.failures()),
        p99_baseline_s=report.quantile(0.99, until=attack_started),
        p99_under_attack_s=report.quantile(0.99, since=attack_started),
        slowloris_open=loris.opened,
        slowloris_refused=loris.refused,
        slowloris_still_open_at_end=open_at_end,
        slowloris_bytes_sent=loris.bytes_sent,
        slow_reader_bytes_read=readers.bytes_read,
        slow_readers_cut_off=readers.closed_by_server,
    )
    assert report.failures() == [], report.failure_lines()
    assert len(under_attack) > 50
    assert report.quantile(0.99, since=attack_started) < P99_LIMIT_SECONDS
    assert loris.opened == SLOWLORIS_CONNECTIONS
    # The attack was real: the slowloris connections were still held open, and the slow
    # readers were still reading when it ended.
    assert open_at_end == SLOWLORIS_CONNECTIONS
    assert 0 < readers.bytes_read < SLOW_READERS * 100_000
    assert readers.closed_by_server == 0
