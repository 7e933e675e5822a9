"""Sentry error tracking, on when SENTRY_DSN is set.

What reaches Sentry is limited on purpose: no default PII (client IPs, cookies, user), no
request bodies (they carry passwords, tokens and customers' data), no local variables
(any of them may hold a secret under an innocent name). `before_send` then scrubs what is
left: values under secret-looking keys (Authorization, cookies, passwords, tokens,
Idempotency-Key...), bearer credentials and JWTs inside strings. Each event carries the
request's `request_id` tag, the id in the X-Request-ID header and the log lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

from slipway.platform.context import current_request_id
from slipway.platform.settings import Settings

FILTERED = "[Filtered]"

#: A key containing any of these (lower case, "-" read as "_") has its value replaced.
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "idempotency",
    "api_key",
    "apikey",
    "credential",
    "private_key",
    "session",
    "csrf",
    "dsn",
)
# Names of secrets, not one.
_SECRET_NAMES = (
    r"[\w-]*(?:password|passwd|secret|token|authorization|idempotency[_-]?key|api[_-]?key)[\w-]*"  # noqa: S105
)
_STRING_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Bearer and Basic credentials, in a header value or anywhere in a message.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), rf"\1 {FILTERED}"),
    # A JWT anywhere (access and refresh tokens are JWTs or opaque; JWTs are recognisable).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), FILTERED),
    # Secret-named parameters in query strings and form bodies.
    (re.compile(rf"(?i)\b({_SECRET_NAMES})=([^&\s]+)"), rf"\1={FILTERED}"),
    # Secret-named members in JSON text.
    (re.compile(rf'(?i)("{_SECRET_NAMES}"\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'\1"{FILTERED}"'),
    # Secret-named fields in reprs of objects and keyword arguments.
    (re.compile(rf"(?i)\b({_SECRET_NAMES}\s*=\s*)(['\"])(?:(?!\2).)*\2"), rf"\1\2{FILTERED}\2"),
)


def is_secret_key(key: str) -> bool:
    normalised = key.lower().replace("-", "_")
    return any(part in normalised for part in SECRET_KEY_PARTS)


def scrub_text(text: str) -> str:
    for pattern, replacement in _STRING_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub(value: Any) -> Any:
    """A copy of `value` with every secret replaced (dicts, lists, tuples, strings)."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            key: FILTERED if isinstance(key, str) and is_secret_key(key) else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        # Header lists: [["authorization", "Bearer ..."], ...]
        if len(value) == 2 and isinstance(value[0], str) and is_secret_key(value[0]):
            return [value[0], FILTERED]
        return [scrub(item) for item in value]
    return value


def before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    request_id = current_request_id()
    if request_id is not None:
        tags = event.get("tags")
        if not isinstance(tags, dict):
            tags = {}
        tags["request_id"] = request_id
        event["tags"] = tags
    scrubbed: dict[str, Any] = scrub(event)
    return scrubbed


def sentry_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `sentry_sdk.init` (tests read them; `init_sentry` uses them)."""
    assert settings.sentry_dsn is not None
    return {
        "dsn": settings.sentry_dsn.get_secret_value(),
        "environment": settings.sentry_environment or settings.environment.value,
        # version+git sha, the same string `slipway version` prints.
        "release": settings.release,
        "traces_sample_rate": settings.sentry_traces_sample_rate,
        "profiles_sample_rate": settings.sentry_profiles_sample_rate,
        "send_default_pii": False,
        "max_request_body_size": "never",
        "include_local_variables": False,
        "before_send": before_send,
        "before_send_transaction": before_send,
        "event_scrubber": EventScrubber(
            denylist=[
                *DEFAULT_DENYLIST,
                "idempotency_key",
                "idempotency-key",
                "refresh_token",
                "access_token",
                "new_password",
                "current_password",
                "secret_key",
            ],
            recursive=True,
        ),
        "integrations": [
            # Middleware spans would wrap every layer of the stack: too costly per request.
            StarletteIntegration(transaction_style="endpoint", middleware_spans=False),
            FastApiIntegration(transaction_style="endpoint", middleware_spans=False),
            SqlalchemyIntegration(),
            CeleryIntegration(monitor_beat_tasks=False),
        ],
    }


def init_sentry(settings: Settings) -> bool:
    """Start the Sentry SDK when SENTRY_DSN is set. Call before routes are built (the
    FastAPI integration wraps request handlers as they are created)."""
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    sentry_sdk.init(**sentry_options(settings))
    return True
