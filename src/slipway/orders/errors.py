"""Order errors."""

from __future__ import annotations

from slipway.platform.errors import AppError, ConflictError, NotFoundError, ValidationFailedError


class OrderNotFoundError(NotFoundError):
    code = "order_not_found"
    message = "The order was not found."


class InsufficientStockError(ConflictError):
    code = "insufficient_stock"
    message = "Some lines cannot be fulfilled with the current stock."


class UnknownProductsError(ValidationFailedError):
    code = "unknown_products"
    message = "Some products do not exist or are not for sale."


class MixedCurrencyError(ValidationFailedError):
    code = "mixed_currency"
    message = "All lines of an order must share one currency."


class IdempotencyKeyReusedError(ValidationFailedError):
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request body."


class IdempotencyKeyRequiredError(AppError):
    status_code = 428
    code = "idempotency_key_required"
    message = "Creating an order requires an Idempotency-Key header."


class InvalidTransitionError(ConflictError):
    code = "invalid_transition"
    message = "The order cannot move to that status."
