"""One error hierarchy and one envelope for every 4xx and 5xx.

Services raise `AppError` subclasses (never `HTTPException`); the handlers here render
`{"error": {"code", "message", "details", "request_id"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from slipway.platform.context import current_request_id


class AppError(Exception):
    """Base of every error the application raises on purpose."""

    status_code: int = 400
    code: str = "bad_request"
    message: str = "The request could not be processed."
    headers: Mapping[str, str] | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.details = details
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        if headers is not None:
            self.headers = headers
        super().__init__(self.message)


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"
    message = "The requested resource was not found."


class ConflictError(AppError):
    status_code = 409
    code = "conflict"
    message = "The request conflicts with the current state of the resource."


class PermissionDeniedError(AppError):
    status_code = 403
    code = "forbidden"
    message = "You do not have permission to perform this action."


class AuthenticationError(AppError):
    status_code = 401
    code = "not_authenticated"
    message = "Invalid or expired token."
    headers = {"WWW-Authenticate": "Bearer"}


class ValidationFailedError(AppError):
    status_code = 422
    code = "validation_error"
    message = "The request is invalid."


class PreconditionFailedError(AppError):
    status_code = 412
    code = "precondition_failed"
    message = "The resource has changed; fetch it again and retry."


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests; retry later."


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    """The body of every error response."""

    error: ErrorBody


#: Documented on every route so clients (and schemathesis) know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "Client error"},
    "5XX": {"model": ErrorEnvelope, "description": "Server error"},
}

_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def code_for_status(status_code: int) -> str:
    return _STATUS_CODES.get(status_code, "http_error" if status_code < 500 else "server_error")


def error_body(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    request_id: str | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "details": details,
                "request_id": request_id if request_id is not None else current_request_id(),
            }
        }
    )


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        content=error_body(status_code, code, message, details),
        status_code=status_code,
        media_type="application/json",
        headers=dict(headers) if headers else None,
    )


def _validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    details = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        details.append(
            {"field": ".".join(loc), "loc": loc, "message": err.get("msg"), "type": err.get("type")}
        )
    return details


async def _app_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Never echo the submitted input back: it may hold passwords or tokens.
    return error_response(
        422, "validation_error", "The request is invalid.", _validation_details(exc.errors())
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str | None:
    """Every method the request's path supports, for a 405's Allow header.

    Starlette answers 405 from the first route whose path matches and lists that route's
    methods only; FastAPI registers one route per method, so `PUT /users/me` was answered
    with `Allow: GET` although PATCH and DELETE exist too (RFC 9110 §15.5.6 wants all of
    them; found by schemathesis). Each method is tried against the routes' own matching,
    which also sees into included routers.
    """
    allowed: list[str] = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed) if allowed else None


def _undecodable_json(exc: StarletteHTTPException) -> str | None:
    """Why a JSON body could not be decoded, when FastAPI reported it as a bare 400.

    FastAPI turns a JSONDecodeError into a 422 but anything else `json.loads` raises into
    400 "There was an error parsing the body": nesting deeper than the interpreter's
    recursion limit (RecursionError, e.g. 100k nested arrays), bytes that are not UTF-8,
    integers beyond the 4300-digit conversion limit (ValueError). Those bodies are invalid
    JSON like any other and get the same 422.
    """
    if exc.status_code != 400:
        return None
    if isinstance(exc.__cause__, RecursionError):
        return "JSON nesting is too deep."
    if isinstance(exc.__cause__, ValueError):
        return "The body is not valid JSON."
    return None


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if (reason := _undecodable_json(exc)) is not None:
        details = [{"field": "body", "loc": ["body"], "message": reason, "type": "json_invalid"}]
        return error_response(422, "validation_error", "The request is invalid.", details)
    status = exc.status_code
    try:
        default_message = HTTPStatus(status).phrase
    except ValueError:
        default_message = "HTTP error"
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else default_message
    headers = dict(exc.headers or {})
    if status == 405 and (allow := allowed_methods(request)):
        headers["Allow"] = allow
    return error_response(status, code_for_status(status), message, None, headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the framework knows about into the envelope.

    Unhandled exceptions are caught by `ServerErrorEnvelopeMiddleware`, inside the request-id
    and security-header layers, so the 500 carries both (Starlette's own handler sits outside
    every user middleware).
    """
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
