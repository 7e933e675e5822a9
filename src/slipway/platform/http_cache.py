"""HTTP caching helpers: strong ETags, 304 on a matching If-None-Match, Cache-Control per
route.

Two ways to use them:

- routes that return stored bytes (cache hits) answer with `conditional_response(...)`,
  which sets ETag and Cache-Control and turns a matching conditional GET into a 304;
- routes that return a model declare `dependencies=[Depends(CacheControl(max_age=60))]`.

Authenticated requests never get a `public` policy: it is downgraded to `private` so a
shared cache (CDN, proxy) never stores one user's answer for another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

_CONDITIONAL_METHODS = frozenset({"GET", "HEAD"})


def strong_etag(body: bytes) -> str:
    """A strong validator from the representation's bytes: '"<32 hex digits>"'."""
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def version_etag(*parts: str | int) -> str:
    """A strong validator from a version (row id and version counter, updated_at, ...)."""
    return '"' + "-".join(str(part) for part in parts) + '"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag.removeprefix("W/")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags, or "*"."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    current = _opaque(etag)
    return any(_opaque(candidate) == current for candidate in if_none_match.split(","))


def is_authenticated(request: Request) -> bool:
    headers = request.headers
    return "authorization" in headers or "cookie" in headers


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """A Cache-Control policy; `header(authenticated)` renders it."""

    max_age: int = 0
    public: bool = False
    no_store: bool = False
    no_cache: bool = False
    must_revalidate: bool = False
    stale_while_revalidate: int | None = None
    immutable: bool = False

    def header(self, *, authenticated: bool = False) -> str:
        if self.no_store:
            return "no-store"
        directives = ["public" if self.public and not authenticated else "private"]
        if self.no_cache:
            directives.append("no-cache")
        directives.append(f"max-age={self.max_age}")
        if self.must_revalidate:
            directives.append("must-revalidate")
        if self.stale_while_revalidate is not None:
            directives.append(f"stale-while-revalidate={self.stale_while_revalidate}")
        if self.immutable:
            directives.append("immutable")
        return ", ".join(directives)


NO_STORE = CachePolicy(no_store=True)
#: Cacheable by the client, revalidated every time (cheap with an ETag and 304).
REVALIDATE = CachePolicy(max_age=0, no_cache=True)


def conditional_response(
    request: Request,
    body: bytes,
    *,
    policy: CachePolicy | None = None,
    etag: str | None = None,
    status_code: int = 200,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """`body` with ETag and Cache-Control, or a bodiless 304 when the client has it."""
    tag = etag or strong_etag(body)
    out = dict(headers or {})
    out["ETag"] = tag
    if policy is not None:
        out["Cache-Control"] = policy.header(authenticated=is_authenticated(request))
    if (
        status_code == 200
        and request.method in _CONDITIONAL_METHODS
        and etag_matches(request.headers.get("if-none-match"), tag)
    ):
        # A 304 repeats the validators and caching headers, never the body or its type.
        return Response(status_code=304, headers=out)
    return Response(body, status_code=status_code, media_type=media_type, headers=out)


class CacheControl:
    """Route dependency: `dependencies=[Depends(CacheControl(max_age=60, public=True))]`.

    Sets Cache-Control on responses built from the route's return value. A route that
    returns a `Response` itself sets its own headers (use `conditional_response`).
    """

    def __init__(self, policy: CachePolicy | None = None, **directives: int | bool) -> None:
        self.policy = policy or CachePolicy(**directives)  # type: ignore[arg-type]

    async def __call__(self, request: Request, response: Response) -> None:
        response.headers["Cache-Control"] = self.policy.header(
            authenticated=is_authenticated(request)
        )
