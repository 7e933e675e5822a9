"""Render the repository's Nginx config for a test run, and run the real `nginx` binary.

The repository files stay the source: rendering copies deploy/nginx/ and changes only
- the two `listen` ports (free loopback ports instead of 80/443),
- the static root (`alias /srv/slipway/static/;`),
- slipway/upstream.conf (loopback app instances instead of the Compose service `app`),
- the temp paths (a private directory, so no root-owned /var/lib/nginx is needed).
Each substitution must match exactly once, so a config change that breaks the rendering
fails here loudly instead of testing something else.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.services import ensure_binary, require_or_skip

REPO = Path(__file__).resolve().parents[2]
NGINX_DIR = REPO / "deploy" / "nginx"
STATIC_ALIAS = "alias /srv/slipway/static/;"
#: `resolve` on upstream servers (and `resolver` inside `upstream`) arrived in 1.27.3.
RESOLVE_MIN_VERSION = (1, 27, 3)


def nginx_binary() -> str:
    """The nginx executable (installed from Debian when missing and allowed)."""
    found = ensure_binary("nginx", "nginx", search_dirs=[Path("/usr/sbin"), Path("/sbin")])
    if found is None:
        require_or_skip("nginx is not installed (apt-get install nginx)")
    return found


def nginx_version(binary: str) -> tuple[int, ...]:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    assert match, result.stderr
    return tuple(int(part) for part in match.groups())


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def make_self_signed(
    directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """A fresh self-signed P-256 certificate valid for `hosts` (IPs and names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slipway-test")])
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # What strict X.509 verification (Python 3.13+'s default) expects of a self-signed CA.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(cert=directory / "fullchain.pem", key=directory / "privkey.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


def _replace_once(text: str, pattern: str, replacement: str, what: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"rendering nginx.conf: expected one {what}, found {count}"
    return new


def render_upstream(source: str, servers: Sequence[str], version: tuple[int, ...]) -> str:
    """The repository's upstream.conf with `app:8000` replaced by `servers`.

    The parameters of the repository's server line (max_fails, fail_timeout) are kept, so
    nginx -t checks them; `resolve` and `resolver` are dropped on Nginx older than 1.27.3.
    """
    lines: list[str] = []
    replaced = 0
    for line in source.splitlines():
        stripped = line.strip()
        if version < RESOLVE_MIN_VERSION and stripped.startswith("resolver "):
            continue
        match = re.match(r"^server\s+app:8000\s+(.*);$", stripped)
        if match:
            params = match.group(1).split()
            if version < RESOLVE_MIN_VERSION:
                params = [p for p in params if p != "resolve"]
            lines.extend(f"server {server} {' '.join(params)};" for server in servers)
            replaced += 1
            continue
        lines.append(line)
    assert replaced == 1, "upstream.conf: expected one `server app:8000 ...;` line"
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RenderedNginx:
    prefix: Path
    conf: Path
    pid: Path

    def argv(self, binary: str, *extra: str) -> list[str]:
        directives = f"pid {self.pid}; daemon off;"
        if os.geteuid() == 0:
            # Workers would otherwise drop to `nobody`, who cannot read a private tmp dir.
            directives += " user root;"
        return [
            binary,
            "-p",
            str(self.prefix),
            "-c",
            str(self.conf),
            "-e",
            "stderr",
            "-g",
            directives,
            *extra,
        ]


def render_nginx(
    target: Path,
    *,
    http_port: int,
    https_port: int,
    upstreams: Sequence[str],
    tls: TlsFiles,
    static_root: Path,
    version: tuple[int, ...],
    listen_host: str = "127.0.0.1",
) -> RenderedNginx:
    conf_dir = target / "conf"
    shutil.copytree(NGINX_DIR, conf_dir, ignore=shutil.ignore_patterns("certs"))
    conf = conf_dir / "nginx.conf"
    text = conf.read_text()
    text = _replace_once(
        text, r"^(\s*)listen 80 ", rf"\1listen {listen_host}:{http_port} ", "listen 80"
    )
    text = _replace_once(
        text, r"^(\s*)listen 443 ", rf"\1listen {listen_host}:{https_port} ", "listen 443"
    )
    text = _replace_once(text, re.escape(STATIC_ALIAS), f"alias {static_root}/;", "static alias")
    temp = target / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _replace_once(text, r"^http \{$", "http {\n" + temp_paths, "http block")
    conf.write_text(text)

    upstream = conf_dir / "slipway" / "upstream.conf"
    upstream.write_text(render_upstream(upstream.read_text(), upstreams, version))

    certs = conf_dir / "certs"
    certs.mkdir()
    shutil.copyfile(tls.cert, certs / "fullchain.pem")
    shutil.copyfile(tls.key, certs / "privkey.pem")
    (target / "logs").mkdir(exist_ok=True)
    return RenderedNginx(prefix=target, conf=conf, pid=target / "nginx.pid")


def nginx_test(binary: str, rendered: RenderedNginx) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the rendered config."""
    return subprocess.run(
        rendered.argv(binary, "-t"), capture_output=True, text=True, timeout=30, check=False
    )
