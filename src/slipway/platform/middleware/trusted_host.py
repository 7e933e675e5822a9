"""Reject requests whose Host header is not one we serve, with the error envelope.

Starlette's TrustedHostMiddleware answers in plain text, which would be the one 4xx outside
the envelope; the matching rules here are the same (exact names and `*.example.com`).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from slipway.platform.errors import error_body


def host_name(header: bytes | None) -> str | None:
    """The host part of a Host header, lower-cased, brackets kept on IPv6; None if invalid."""
    if not header:
        return None
    try:
        value = header.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        host, port = value[: end + 1], value[end + 1 :]
    else:
        host, colon, rest = value.partition(":")
        port = colon + rest
    if port and not (port.startswith(":") and port[1:].isdigit()):
        return None
    if not host or any(char in host for char in " /\\@?#"):
        return None
    return host


class TrustedHostMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str],
        exempt_prefixes: tuple[str, ...] = ("/health",),
    ) -> None:
        self.app = app
        # Load balancers (ECS/ALB, DigitalOcean) probe with the target's IP as Host; health
        # answers do not depend on the host, so they are exempt.
        self.exempt_prefixes = exempt_prefixes
        patterns = [pattern.lower() for pattern in allowed_hosts]
        for pattern in patterns:
            wildcard_ok = pattern == "*" or (pattern.startswith("*.") and "*" not in pattern[1:])
            if "*" in pattern and not wildcard_ok:
                raise ValueError(f"host pattern {pattern!r}: wildcards must be '*.domain'")
        self.allow_any = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.startswith("*"))
        # "*.example.com" matches subdomains only, like Starlette's.
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def is_allowed(self, host: str) -> bool:
        return host in self.exact or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.allow_any
            or scope["type"] not in ("http", "websocket")
            or scope["path"].startswith(self.exempt_prefixes)
        ):
            await self.app(scope, receive, send)
            return

        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                raw = value
                break
        host = host_name(raw)
        if host is not None and self.is_allowed(host):
            await self.app(scope, receive, send)
            return

        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = error_body(
            400, "invalid_host", "The Host header names a host this server does not serve."
        )
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
