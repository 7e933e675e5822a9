"""Catalog errors (all subclasses of the one AppError hierarchy)."""

from __future__ import annotations

from slipway.platform.errors import AppError, ConflictError, NotFoundError, PreconditionFailedError


class ProductNotFoundError(NotFoundError):
    code = "product_not_found"
    message = "The product was not found."


class DuplicateSkuError(ConflictError):
    code = "duplicate_sku"
    message = "A product with this SKU already exists."


class StaleProductError(PreconditionFailedError):
    code = "stale_version"
    message = "The product has changed since you read it; fetch it again and retry."


class IfMatchRequiredError(AppError):
    status_code = 428
    code = "if_match_required"
    message = "This update requires an If-Match header with the product's ETag."


class ProductArchivedError(ConflictError):
    code = "product_archived"
    message = "The product is archived."
