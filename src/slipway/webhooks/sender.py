"""One HTTP attempt to a pinned webhook target: bounded in time and in bytes.

- connects to the address the SSRF guard resolved, never to a fresh DNS answer;
- follows no redirect (a 3xx is a failed delivery: a redirect could point anywhere);
- ignores proxy variables (trust_env=False): a proxy would resolve the name itself;
- one connection per attempt, no keep-alive: pooled connections are keyed by address, and
  one could otherwise carry a request for another host name;
- connect/read/write timeouts plus one deadline over the whole attempt;
- reads at most WEBHOOK_MAX_RESPONSE_BYTES of the answer (raw, never decompressed).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import httpx

from slipway.platform.settings import Settings
from slipway.webhooks.ssrf import PinnedTarget

USER_AGENT = "Slipway-Webhooks/1"
EXCERPT_CHARS = 1000


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None
    duration_ms: int
    error: str | None
    excerpt: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        return f"the receiver answered HTTP {self.status_code}"


async def send(
    target: PinnedTarget,
    body: bytes,
    headers: dict[str, str],
    settings: Settings,
    *,
    verify: ssl.SSLContext | bool = True,
) -> SendResult:
    """POST `body` to `target`; never raises for network or HTTP failures."""
    timeout = httpx.Timeout(
        settings.webhook_timeout_seconds, connect=settings.webhook_connect_timeout_seconds
    )
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)
    started = time.perf_counter()
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None
    try:
        async with (
            asyncio.timeout(settings.webhook_timeout_seconds),
            httpx.AsyncClient(
                timeout=timeout,
                limits=limits,
                follow_redirects=False,
                trust_env=False,
                verify=verify,
            ) as client,
        ):
            request = client.build_request(
                "POST",
                target.connect_url,
                content=body,
                headers={
                    **headers,
                    "Host": target.host_header,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
                extensions=target.extensions,
            )
            response = await client.send(request, stream=True)
            try:
                status_code = response.status_code
                excerpt = await _read_bounded(response, settings.webhook_max_response_bytes)
            finally:
                await response.aclose()
    except TimeoutError:
        error = f"timed out after {settings.webhook_timeout_seconds:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    duration_ms = round((time.perf_counter() - started) * 1000)
    return SendResult(status_code, duration_ms, error, excerpt)


async def _read_bounded(response: httpx.Response, limit: int) -> str | None:
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk[: limit - len(received)]
        if len(received) >= limit:
            break  # the rest is never downloaded: aclose() drops the connection
    if not received:
        return None
    return received[:EXCERPT_CHARS].decode("utf-8", errors="replace")
