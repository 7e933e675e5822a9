"""The SSRF guard of outbound webhooks (OWASP API7).

A staff member chooses the URL, so the URL is hostile until proven otherwise:

- https only, except in development and testing; no credentials in the URL;
- the host is resolved once, here, and *every* address it resolves to must be public:
  private, loopback, link-local, cloud-metadata, unique-local, multicast, reserved,
  unspecified and other non-global ranges are refused (IPv4-mapped, NAT64 and 6to4 IPv6
  forms are unwrapped first, so ::ffff:127.0.0.1 is loopback);
- the request then goes to that resolved address (the `PinnedTarget`), with the original
  Host header and TLS server name, so a DNS answer that changes between the check and the
  connection (DNS rebinding) cannot redirect it. Redirects are never followed (sender.py).

The check runs when an endpoint is registered or changed, and again before every delivery:
DNS may point somewhere else by then. WEBHOOK_ALLOW_LOOPBACK admits loopback for tests
only; production refuses that setting.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from slipway.platform.settings import Environment, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Instance metadata services: AWS/GCP/Azure/OpenStack (IPv4), AWS Nitro (IPv6), and
#: Alibaba's. Named separately so the refusal says what it protected.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
MAX_ADDRESSES = 16


class BlockedTargetError(Exception):
    """The URL may not be called; `reason` says why (safe to show to staff)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """A checked URL and the address the request must connect to."""

    url: httpx.URL
    address: IPAddress

    @property
    def host(self) -> str:
        return self.url.host

    @property
    def connect_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def extensions(self) -> dict[str, str]:
        # TLS must still present and verify the *name*: the certificate is for it, not
        # for the address we connect to.
        if self.url.scheme == "https" and not _is_ip_literal(self.host):
            return {"sni_hostname": self.host}
        return {}


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address hidden in an IPv6 one (mapped, NAT64, 6to4), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def blocked_reason(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """What makes `address` uncallable ("a loopback address"), or None when it is a public
    unicast address."""
    inner = _unwrap(address)
    if address in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if inner.is_loopback:
        return None if allow_loopback else "a loopback address"
    checks = (
        (inner.is_unspecified, "an unspecified address"),
        (inner.is_link_local, "a link-local address"),
        (inner.is_multicast, "a multicast address"),
        (
            isinstance(inner, ipaddress.IPv6Address) and inner in _UNIQUE_LOCAL,
            "a unique-local address",
        ),
        (inner.is_reserved, "a reserved address"),
        (inner.is_private, "a private address"),
        (not inner.is_global, "not a public address"),
    )
    for matched, kind in checks:
        if matched:
            return kind
    return None


def https_required(settings: Settings) -> bool:
    return settings.environment not in (Environment.DEVELOPMENT, Environment.TESTING)


def parse_url(url: str, settings: Settings) -> httpx.URL:
    """The static checks: scheme, credentials, host. Raises BlockedTargetError."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise BlockedTargetError("the URL cannot be parsed") from error
    allowed = ("https",) if https_required(settings) else ("https", "http")
    if parsed.scheme not in allowed:
        raise BlockedTargetError(f"the URL scheme must be {' or '.join(allowed)}")
    if parsed.userinfo:
        raise BlockedTargetError("credentials in the URL are not allowed; use the signature")
    if not parsed.host:
        raise BlockedTargetError("the URL has no host")
    return parsed


async def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is its own answer)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as error:
        raise BlockedTargetError(f"{host} does not resolve") from error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # IPv6 sockaddrs carry a scope id ("fe80::1%eth0"): keep the address only.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise BlockedTargetError(f"{host} does not resolve")
    return addresses[:MAX_ADDRESSES]


async def check_target(url: str, settings: Settings) -> PinnedTarget:
    """Parse, resolve and check `url`; the pinned target to connect to, or BlockedTargetError.

    All resolved addresses must pass, not just the first: a name that answers with one
    public and one private address could otherwise be steered to the private one.
    """
    parsed = parse_url(url, settings)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await resolve(parsed.host, port, settings.webhook_connect_timeout_seconds)
    for address in addresses:
        reason = blocked_reason(address, allow_loopback=settings.webhook_allow_loopback)
        if reason is not None:
            raise BlockedTargetError(
                f"{address} is {reason}"
                if _is_ip_literal(parsed.host)
                else f"{parsed.host} resolves to {address}, {reason}"
            )
    return PinnedTarget(parsed, addresses[0])
