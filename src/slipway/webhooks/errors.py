"""Webhook errors."""

from __future__ import annotations

from slipway.platform.errors import ConflictError, NotFoundError, ValidationFailedError


class WebhookNotFoundError(NotFoundError):
    code = "webhook_not_found"
    message = "The webhook endpoint was not found."


class WebhookUrlBlockedError(ValidationFailedError):
    code = "webhook_url_blocked"
    message = "The webhook URL is not allowed."


class TooManyWebhooksError(ConflictError):
    code = "too_many_webhooks"
    message = "The maximum number of webhook endpoints is registered."
