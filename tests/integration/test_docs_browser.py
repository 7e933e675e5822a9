"""/docs and /redoc render in a real headless Chromium with no internet access: every asset
comes from the application itself, never from a CDN."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import SlipwayServer, slipway_env, start_server
from tests.support.services import ensure_binary, require_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROWSER_TIMEOUT = 120.0
_ASSET_ATTRIBUTE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_ABSOLUTE_URL = re.compile(r"""https?://[^\s"'<>)]+""", re.IGNORECASE)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = ensure_binary("chromium", "chromium")
    if path is None:
        require_or_skip("chromium is not installed and cannot be installed here")
    return path


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlipwayServer]:
    """The development server, started as a user would in an empty directory."""
    workdir = tmp_path_factory.mktemp("docs-server")
    server = start_server(workdir, slipway_env(LOG_FORMAT="json"))
    try:
        yield server
    finally:
        server.process.close()


def render(chromium: str, url: str, profile: Path) -> str:
    """The DOM after scripts ran, as Chromium serialises it."""
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_renders_in_a_browser(
    chromium: str, docs_server: SlipwayServer, tmp_path: Path
) -> None:
    source = httpx.get(docs_server.url("/docs"), timeout=10).text

    dom = render(chromium, docs_server.url("/docs"), tmp_path / "profile")

    # Swagger UI built the operation list from /openapi.json: this markup exists only
    # after its JavaScript ran, never in the HTML the server sent.
    assert 'class="opblock' not in source
    assert "/health/live" not in source
    assert 'class="opblock' in dom
    assert re.search(r'class="opblock-summary-path"[^>]*>.*?/health/live', dom)
    assert "/health/ready" in dom
    assert "Failed to load API definition" not in dom


def test_redoc_renders_in_a_browser(
    chromium: str, docs_server: SlipwayServer, tmp_path: Path
) -> None:
    source = httpx.get(docs_server.url("/redoc"), timeout=10).text

    dom = render(chromium, docs_server.url("/redoc"), tmp_path / "profile")

    assert "redoc-wrap" not in source
    assert "redoc-wrap" in dom
    assert "api-content" in dom
    # Operation summaries come from the schema, rendered by ReDoc's script.
    assert "Liveness probe" not in source
    assert "Liveness probe" in dom
    assert "Readiness probe" in dom
    assert "Something went wrong" not in dom


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_reference_only_same_origin_assets(docs_server: SlipwayServer, path: str) -> None:
    response = httpx.get(docs_server.url(path), timeout=10)

    assert response.status_code == 200
    html = response.text
    references = _ASSET_ATTRIBUTE.findall(html)
    assert references, "expected script/style references in the page"
    for reference in references:
        parts = urlsplit(reference)
        assert not parts.scheme, reference
        assert not parts.netloc, reference  # also rejects protocol-relative //cdn...
        assert reference.startswith("/"), reference
    # No CDN anywhere in the page, including inside inline scripts.
    assert _ABSOLUTE_URL.findall(html) == []
    for reference in references:
        asset = httpx.get(docs_server.url(reference), timeout=10)
        assert asset.status_code == 200, reference
        assert asset.content, reference
