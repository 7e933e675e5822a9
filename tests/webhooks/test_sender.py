"""Pinned HTTPS: the sender connects to the address the guard resolved, yet TLS still sends
and verifies the registered *name* (SNI and certificate hostname), against a real TLS
receiver on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slipway.webhooks.sender import send
from slipway.webhooks.ssrf import check_target
from tests.conftest import make_settings
from tests.support.ports import LOOPBACK


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TlsReceiver:
    port: int
    cert: Path
    server_names: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def serve_tls(tmp_path: Path, certificate_name: str) -> Iterator[TlsReceiver]:
    cert, key = self_signed(tmp_path, certificate_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
    receiver = TlsReceiver(int(server.server_address[1]), cert)

    def remember_sni(_socket: Any, server_name: str | None, _context: Any) -> None:
        receiver.server_names.append(server_name)

    context.sni_callback = remember_sni
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def localhost_tls(tmp_path: Path) -> Iterator[TlsReceiver]:
    yield from serve_tls(tmp_path, "localhost")


@pytest.fixture
def wrong_name_tls(tmp_path: Path) -> Iterator[TlsReceiver]:
    yield from serve_tls(tmp_path, "hooks.example.com")


SETTINGS = make_settings(webhook_allow_loopback=True, webhook_timeout_seconds=5.0)


async def test_tls_goes_to_the_pinned_address_with_the_registered_name(
    localhost_tls: TlsReceiver,
) -> None:
    target = await check_target(f"https://localhost:{localhost_tls.port}/hook", SETTINGS)
    assert target.address == ipaddress.ip_address("127.0.0.1")
    assert target.connect_url.host == "127.0.0.1"

    trust = ssl.create_default_context(cafile=str(localhost_tls.cert))
    result = await send(target, b"{}", {}, SETTINGS, verify=trust)

    assert result.ok, result
    assert localhost_tls.server_names == ["localhost"]


async def test_a_certificate_for_another_name_is_refused(wrong_name_tls: TlsReceiver) -> None:
    target = await check_target(f"https://localhost:{wrong_name_tls.port}/hook", SETTINGS)
    trust = ssl.create_default_context(cafile=str(wrong_name_tls.cert))

    result = await send(target, b"{}", {}, SETTINGS, verify=trust)

    assert not result.ok
    assert result.status_code is None
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error or ""), result.error
