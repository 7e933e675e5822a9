"""Run the repository's Caddyfile for a test: the real `caddy` binary (Debian's package),
configured only through the file's own environment placeholders, plus one rendering step.

The repository file stays the source. The environment picks the local mode (`tls
internal`, loopback upstreams, free ports, admin API off) and private XDG directories, so
Caddy's certificates, its local CA and its autosaved config land in the test's temporary
directory and never in the host's trust store. Rendering adds only `default_bind
127.0.0.1` to the global options (production listens on every interface).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import ensure_binary, require_or_skip

REPO = Path(__file__).resolve().parents[2]
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"
#: Where `tls internal` keeps its CA under $XDG_DATA_HOME.
LOCAL_CA = Path("caddy") / "pki" / "authorities" / "local" / "root.crt"


def caddy_binary() -> str:
    """The caddy executable (installed from Debian when missing and allowed)."""
    found = ensure_binary("caddy", "caddy", search_dirs=[Path("/usr/bin"), Path("/usr/sbin")])
    if found is None:
        require_or_skip("caddy is not installed (apt-get install caddy)")
    return found


def render_caddyfile(target: Path, bind: str = "127.0.0.1") -> Path:
    """The repository's Caddyfile with `default_bind` added to its global options."""
    text = CADDYFILE.read_text(encoding="utf-8")
    rendered, count = re.subn(
        r"^\{$", f"{{\n\tdefault_bind {bind}", text, count=1, flags=re.MULTILINE
    )
    assert count == 1, "Caddyfile: expected a global options block"
    target.mkdir(parents=True, exist_ok=True)
    path = target / "Caddyfile"
    path.write_text(rendered, encoding="utf-8")
    return path


@dataclass(frozen=True)
class CaddyDirs:
    home: Path
    data: Path
    config: Path

    @property
    def local_ca(self) -> Path:
        return self.data / LOCAL_CA


def caddy_dirs(root: Path) -> CaddyDirs:
    dirs = CaddyDirs(home=root / "home", data=root / "data", config=root / "config")
    for path in (dirs.home, dirs.data, dirs.config):
        path.mkdir(parents=True, exist_ok=True)
    return dirs


def caddy_env(
    dirs: CaddyDirs,
    *,
    upstreams: Sequence[str],
    http_port: int,
    https_port: int,
    domain: str = "127.0.0.1",
    tls: str = "internal",
    static_root: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a caddy process (nothing inherited but PATH)."""
    import os

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(dirs.home),
        "XDG_DATA_HOME": str(dirs.data),
        "XDG_CONFIG_HOME": str(dirs.config),
        "SLIPWAY_DOMAIN": domain,
        "CADDY_TLS": tls,
        "CADDY_ADMIN": "off",
        "CADDY_HTTP_PORT": str(http_port),
        "CADDY_HTTPS_PORT": str(https_port),
        "SLIPWAY_UPSTREAMS": " ".join(upstreams),
    }
    if static_root is not None:
        env["SLIPWAY_STATIC_ROOT"] = str(static_root)
    env.update(extra or {})
    return env


def caddy_argv(binary: str, command: str, caddyfile: Path) -> list[str]:
    return [binary, command, "--adapter", "caddyfile", "--config", str(caddyfile)]
