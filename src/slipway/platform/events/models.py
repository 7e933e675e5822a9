"""Application events and who may receive them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from slipway.platform.db.base import utcnow
from slipway.platform.events.auth import Principal


@dataclass(frozen=True, slots=True)
class Audience:
    """Everyone, some users, staff, or a combination (order events: the owner and staff)."""

    everyone: bool = False
    users: frozenset[uuid.UUID] = frozenset()
    staff: bool = False

    @classmethod
    def all(cls) -> Audience:
        return cls(everyone=True)

    @classmethod
    def to_users(cls, *user_ids: uuid.UUID, staff: bool = False) -> Audience:
        return cls(users=frozenset(user_ids), staff=staff)

    @classmethod
    def to_staff(cls) -> Audience:
        return cls(staff=True)

    def includes(self, principal: Principal) -> bool:
        return (
            self.everyone or principal.user_id in self.users or (self.staff and principal.is_staff)
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "everyone": self.everyone,
            "users": sorted(map(str, self.users)),
            "staff": self.staff,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Audience:
        users: Iterable[str] = data.get("users", ())
        return cls(
            everyone=bool(data.get("everyone", False)),
            users=frozenset(uuid.UUID(user) for user in users),
            staff=bool(data.get("staff", False)),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """`type` names it ("order.paid"), `data` is its JSON body, `audience` its readers."""

    type: str
    data: Mapping[str, Any]
    audience: Audience
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = field(default_factory=utcnow)

    def client_message(self) -> str:
        """What a WebSocket client receives (the audience stays on the server)."""
        return orjson.dumps(
            {"type": self.type, "id": self.id, "ts": self.occurred_at, "data": self.data}
        ).decode()


def encode_envelope(event: Event) -> bytes:
    """The fan-out message: serialised once, delivered to every instance."""
    return orjson.dumps({"audience": event.audience.to_wire(), "message": event.client_message()})


def decode_envelope(raw: bytes | str) -> tuple[Audience, str]:
    body = orjson.loads(raw)
    return Audience.from_wire(body["audience"]), str(body["message"])
