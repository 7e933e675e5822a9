"""Imports every area's models so Alembic sees the whole metadata."""

from __future__ import annotations

from slipway.platform.db.base import Base
from slipway.platform.jobs.models import Job

metadata = Base.metadata

__all__ = ["Base", "Job", "metadata"]
