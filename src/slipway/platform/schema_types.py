"""Constraints shared by the request schemas of every area, so each field accepts exactly what
the OpenAPI schema promises (schemathesis checks both directions)."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticCustomError

#: PostgreSQL `text` cannot hold U+0000: a NUL stored or looked up raised a database error
#: (a 500, found by schemathesis). Stored text refuses it with this pattern (a 422 the
#: OpenAPI schema documents); lookups treat it as matching nothing.
NO_NUL_PATTERN = r"^[^\x00]*$"


def json_number_only(value: Any) -> Any:
    """A `mode="before"` field validator for `int` body fields: JSON numbers only."""
    # Lax mode turned JSON `true` into 1 and `"5"` into 5, which the schema's `integer`
    # forbids; integral floats (5.0) stay accepted, as JSON Schema counts them as integers.
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value
