"""uvicorn's httptools protocol with a keep-alive-safe graceful shutdown.

At shutdown uvicorn closes every idle keep-alive connection at once. A client (Nginx's
upstream keepalive pool, an HTTP client library) that sent its next request on such a
connection a moment earlier, or sends it a moment later, gets a reset instead of a
response: a 502 behind Nginx, which never retries a POST. The zero-downtime SIGHUP test
(tests/integration/test_gunicorn_lifecycle.py, 8 keep-alive clients) measured 3 and 6
failed requests per gunicorn reload and 0 and 1 per uvicorn rolling restart with uvicorn's
protocol; none in any run with this one. Upstream discussion:
https://github.com/Kludex/uvicorn/discussions/2315.

This protocol drains instead:
- a connection busy with a request finishes it with `Connection: close` (as uvicorn does);
- an idle connection stays open for DRAIN_IDLE_SECONDS; a request that arrives on it in
  that window (including one already in the socket buffer, unparsed) is served with
  `Connection: close`, so the client learns from a response, not from a reset, to
  reconnect (to a worker that still listens);
- a connection still idle after the window is closed, as uvicorn would have done at once.

The server's own deadline still applies: uvicorn waits for connections at most
`timeout_graceful_shutdown` seconds, so the drain can never delay exit beyond it.

Writes also go through a CoalescingTransport (slipway.serving.coalesce): a response's
headers and body leave in one send(), so a worker killed mid-response never leaves the
proxy with headers it cannot retry.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from slipway.serving.coalesce import CoalescingTransport

#: What `http=` takes in uvicorn's Config (an import string survives uvicorn's worker spawn).
HTTP_PROTOCOL = "slipway.serving.protocol:DrainingHttpToolsProtocol"
#: How long an idle keep-alive connection stays usable after shutdown starts. Clients
#: that reuse connections do so within milliseconds; one idle this long is abandoned.
DRAIN_IDLE_SECONDS = 1.0


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    _draining = False
    _drain_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def shutdown(self) -> None:
        """Called by the server to commence a graceful shutdown."""
        self._draining = True
        if self._idle():
            self._drain_timer = self.loop.call_later(DRAIN_IDLE_SECONDS, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # A request that arrives while draining is answered with `Connection: close`;
        # the response has not started yet (its task is only scheduled).
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        self._drain_timer = None
        if self._idle() and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        super().connection_lost(exc)
