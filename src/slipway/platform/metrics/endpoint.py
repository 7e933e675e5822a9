"""GET /metrics and who may read it (METRICS_EXPOSURE).

- public: anyone who reaches the app (development and testing only);
- token: `Authorization: Bearer <METRICS_TOKEN>`, else 401;
- ip_allowlist: clients in METRICS_ALLOW_IPS, else 403. The client address is the one the
  proxy-headers layer resolved from FORWARDED_ALLOW_IPS, so a request relayed by Nginx for
  a public client is judged by that client's address, not the proxy's;
- port: not on the app's port at all (see `server.py`).

Excluded from the access log (quiet prefix) and from rate limits (RATE_LIMIT_EXEMPT_PATHS).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from slipway.platform.errors import AuthenticationError, PermissionDeniedError
from slipway.platform.metrics.multiprocess import exposition_registry
from slipway.platform.settings import Settings

METRICS_PATH = "/metrics"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def render_metrics(accept: str | None) -> tuple[bytes, str]:
    """The exposition body for this process (every worker's sum in multiprocess mode) in
    the format the scraper asked for (Prometheus text or OpenMetrics)."""
    from prometheus_client.exposition import choose_encoder

    from slipway.platform.metrics.instruments import publish_in_flight

    publish_in_flight()
    encoder, content_type = choose_encoder(accept or "")
    return encoder(exposition_registry()), content_type


class ExposureGuard:
    """Decides whether a request may read the metrics; raises the error envelope if not."""

    def __init__(
        self, mode: str, *, token: str | None = None, allow_ips: Sequence[str] = ()
    ) -> None:
        self.mode = mode
        self._token = f"Bearer {token}".encode() if token else None
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in allow_ips
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ExposureGuard:
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        return cls(
            settings.metrics_exposure_mode, token=token, allow_ips=settings.metrics_allow_ips
        )

    def check(self, request: Request) -> None:
        if self.mode == "token":
            given = request.headers.get("authorization", "").encode("latin-1")
            # Constant-time: the comparison must not tell an attacker how much matched.
            if self._token is None or not hmac.compare_digest(given, self._token):
                raise AuthenticationError("A valid metrics token is required.")
        elif self.mode == "ip_allowlist" and not self._allowed(
            request.client.host if request.client else None
        ):
            raise PermissionDeniedError("Metrics are not available to this address.")

    def _allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


def install_metrics_route(app: FastAPI, settings: Settings) -> None:
    """Mount GET /metrics unless the metrics live on their own port."""
    guard = ExposureGuard.from_settings(settings)
    if guard.mode == "port":
        return

    # A plain `def`: Starlette runs it in the thread pool, so reading every worker's files
    # never blocks the event loop.
    def metrics(request: Request) -> Response:
        guard.check(request)
        body, content_type = render_metrics(request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
