"""Constraints shared by the text fields of every area's schemas."""

from __future__ import annotations

#: PostgreSQL `text` cannot hold U+0000: a NUL stored or looked up raised a database error
#: (a 500, found by schemathesis). Stored text refuses it with this pattern (a 422 the
#: OpenAPI schema documents); lookups treat it as matching nothing.
NO_NUL_PATTERN = r"^[^\x00]*$"
