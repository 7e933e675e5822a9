"""Deterministic, readable cache keys and tags.

ERRATA: the source samples hashed `str(args)` (which includes an `AsyncSession` repr, so it
never hit) or used `hash()` (different in every process). Keys here are built only from
plain values, encoded the same way in every process, and stay greppable in Redis:
`cache_key("product", 42)` is stored as `slipway:v1:product:42`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import NewType
from urllib.parse import quote
from uuid import UUID

#: A key relative to the cache namespace; the service adds `<prefix>:<schema version>:`.
CacheKey = NewType("CacheKey", str)
#: A tag names a group of entries invalidated together (e.g. "products").
CacheTag = NewType("CacheTag", str)

KeyPart = str | int | UUID | Enum | bool

# Separators (":", "&", "=") are escaped inside parts, so two different part lists can never
# produce the same key; everything else people put in ids stays readable.
_SAFE = "-._~,@+"


def _encode(part: KeyPart) -> str:
    if isinstance(part, bool):  # before int: bool is an int subclass
        return "true" if part else "false"
    if isinstance(part, Enum):
        return _encode(part.value)
    if isinstance(part, int | UUID):
        return str(part)
    if isinstance(part, str):
        return quote(part, safe=_SAFE)
    # Anything else (a session, an ORM object, a dict) has no stable textual identity.
    raise TypeError(f"cache key parts must be str, int, bool, UUID or Enum, not {type(part)!r}")


def _encode_params(params: Mapping[str, KeyPart | None]) -> str:
    pairs = sorted((name, value) for name, value in params.items() if value is not None)
    return "&".join(f"{quote(name, safe=_SAFE)}={_encode(value)}" for name, value in pairs)


def cache_key(*parts: KeyPart, params: Mapping[str, KeyPart | None] | None = None) -> CacheKey:
    """`cache_key("product", 42)` -> "product:42"; params are sorted, None values dropped:
    `cache_key("products", params={"page": 2, "q": "tea"})` -> "products:page=2&q=tea"."""
    if not parts:
        raise ValueError("a cache key needs at least one part")
    encoded = [_encode(part) for part in parts]
    if params:
        encoded.append(_encode_params(params))
    return CacheKey(":".join(encoded))


def cache_tag(*parts: KeyPart) -> CacheTag:
    """`cache_tag("product", 42)` -> "product:42" (same encoding as keys)."""
    return CacheTag(cache_key(*parts))
