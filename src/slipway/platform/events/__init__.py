"""Realtime events: `publish(event)` here, delivered over `GET /ws/events` everywhere.

await services.events.publish(
    Event("order.paid", {"order_id": str(order.id)}, Audience.to_users(owner, staff=True))
)
services.events.publish_after_commit(session, event)  # only if the transaction commits
"""

from slipway.platform.events.auth import (
    Principal,
    TokenVerifier,
    get_token_verifier,
    install_token_verifier,
)
from slipway.platform.events.bus import EventBus, open_events
from slipway.platform.events.models import Audience, Event

__all__ = [
    "Audience",
    "Event",
    "EventBus",
    "Principal",
    "TokenVerifier",
    "get_token_verifier",
    "install_token_verifier",
    "open_events",
]
