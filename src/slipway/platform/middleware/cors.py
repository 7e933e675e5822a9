"""CORS with explicit origins; a rejected preflight answers with the error envelope.

Starlette's CORSMiddleware does the matching; only its plain-text 400 is re-rendered, so
every 4xx the app sends has the same shape.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.responses import Response

from slipway.platform.errors import error_response

_FAILURE_PREFIX = "Disallowed CORS "


class CORSMiddleware(StarletteCORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        text = bytes(response.body).decode("utf-8", "replace")
        # Starlette lists what failed: "Disallowed CORS origin, method, headers".
        disallowed = [part.strip() for part in text.removeprefix(_FAILURE_PREFIX).split(",")]
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        return error_response(
            response.status_code,
            "cors_rejected",
            "The cross-origin request is not allowed.",
            {"disallowed": disallowed},
            headers,
        )
