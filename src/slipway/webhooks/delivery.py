"""One delivery attempt: SSRF check, circuit breaker, signed POST, and its record.

The job runtime owns retries (`webhooks.deliver` raises to ask for one, with the jobs'
exponential backoff and jitter); this module never loops. Every attempt is written to
`webhook_deliveries` in a transaction of its own, committed at once, because the job's
transaction rolls back when the attempt fails and the record must survive exactly then.
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from slipway.platform.jobs.registry import PermanentJobError
from slipway.platform.services import Services
from slipway.webhooks.breaker import CircuitOpenError, breakers_for
from slipway.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from slipway.webhooks.sender import SendResult, send
from slipway.webhooks.signing import SecretBox, signature_headers
from slipway.webhooks.ssrf import BlockedTargetError, check_target

log = structlog.get_logger("slipway.webhooks")


class DeliveryFailedError(Exception):
    """The receiver did not accept the delivery; the job retries it."""


class CircuitOpenRetryError(Exception):
    """The endpoint's breaker is open: nothing was sent; the job retries later."""


class TargetBlockedError(PermanentJobError):
    """The SSRF guard refused the URL at delivery time: retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: uuid.UUID
    number: int
    endpoint_id: uuid.UUID
    message_id: str
    event_type: str
    body: bytes

    @classmethod
    def from_payload(cls, payload: dict[str, Any], job_id: uuid.UUID, number: int) -> Attempt:
        return cls(
            job_id=job_id,
            number=number,
            endpoint_id=uuid.UUID(str(payload["endpoint_id"])),
            message_id=str(payload["message_id"]),
            event_type=str(payload["event_type"]),
            body=str(payload["body"]).encode(),
        )


async def record(
    services: Services,
    attempt: Attempt,
    status: DeliveryStatus,
    result: SendResult | None = None,
    error: str | None = None,
) -> None:
    if error is None and result is not None and not result.ok:
        error = result.describe()
    async with services.session_factory() as session, session.begin():
        session.add(
            WebhookDelivery(
                endpoint_id=attempt.endpoint_id,
                message_id=attempt.message_id,
                event_type=attempt.event_type,
                job_id=attempt.job_id,
                attempt=attempt.number,
                status=status.value,
                status_code=result.status_code if result else None,
                duration_ms=result.duration_ms if result else None,
                error=error,
                response_excerpt=result.excerpt if result else None,
            )
        )


def _raise_unless_accepted(result: SendResult) -> None:
    if not result.ok:
        raise DeliveryFailedError(result.describe())


async def deliver(
    services: Services,
    endpoint: WebhookEndpoint | None,
    attempt: Attempt,
    *,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    """Make one attempt. Returns the job result; raises to have the job retried (or
    failed, for TargetBlockedError)."""
    bound = log.bind(
        endpoint_id=str(attempt.endpoint_id), message_id=attempt.message_id, attempt=attempt.number
    )
    if endpoint is None or not endpoint.is_active:
        bound.info("webhook_skipped", reason="deleted" if endpoint is None else "inactive")
        return {"skipped": "endpoint deleted" if endpoint is None else "endpoint inactive"}
    settings = services.settings
    try:
        target = await check_target(endpoint.url, settings)
    except BlockedTargetError as error:
        await record(services, attempt, DeliveryStatus.BLOCKED, error=error.reason)
        bound.warning("webhook_blocked", reason=error.reason)
        raise TargetBlockedError(error.reason) from error

    secret = SecretBox(settings.secret_key.get_secret_value()).open(endpoint.secret_ciphertext)
    headers = signature_headers(secret, attempt.message_id, attempt.body)
    breaker = await breakers_for(services).breaker(attempt.endpoint_id)
    result: SendResult | None = None
    try:
        async with breaker:
            result = await send(target, attempt.body, headers, settings, verify=verify)
            # Raised inside the breaker so that it counts as a failure.
            _raise_unless_accepted(result)
    except CircuitOpenError as error:
        await record(services, attempt, DeliveryStatus.CIRCUIT_OPEN, error=str(error))
        bound.warning("webhook_circuit_open")
        raise CircuitOpenRetryError(str(error)) from error
    except DeliveryFailedError:
        await record(services, attempt, DeliveryStatus.FAILED, result)
        bound.warning(
            "webhook_failed",
            status_code=result and result.status_code,
            error=result and result.error,
        )
        raise
    assert result is not None
    await record(services, attempt, DeliveryStatus.SUCCEEDED, result)
    bound.info("webhook_delivered", status_code=result.status_code, duration_ms=result.duration_ms)
    return {"status_code": result.status_code, "duration_ms": result.duration_ms}
