"""Job kinds and their async handlers.

An area declares its jobs in its own `tasks.py` with `@job("kind")`; `load_job_modules`
imports every `slipway.<area>.tasks`, so the web process, the embedded runner and the
Celery worker all know the same kinds. The handler receives a `JobContext` whose session
is already inside the transaction that will also mark the job succeeded: write effects
there (flush, never commit) and they happen exactly once.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.settings import Environment, Settings

if TYPE_CHECKING:
    from slipway.platform.services import Services

JobResult = dict[str, Any] | None
JobHandler = Callable[["JobContext"], Awaitable[JobResult]]
H = TypeVar("H", bound=JobHandler)

#: Platform modules that declare jobs or purge functions (areas are discovered).
CORE_JOB_MODULES = ("slipway.platform.jobs.purge", "slipway.platform.mail.tasks")
#: Loaded only when ENVIRONMENT=testing: kinds the acceptance tests drive.
TESTING_JOB_MODULES = ("slipway.platform.jobs.testing",)
_NOT_AREAS = frozenset({"api", "cli", "migrations", "platform"})


class PermanentJobError(Exception):
    """A failure retrying cannot fix (bad payload, a 5xx SMTP reply): fail at once."""


class UnknownJobKindError(LookupError):
    """No handler is registered for this kind."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    kind: str
    handler: JobHandler
    #: None: JOBS_MAX_RETRIES.
    max_retries: int | None
    #: Exceptions worth another attempt; anything else fails the job at once.
    retry_on: tuple[type[BaseException], ...]

    def retries(self, settings: Settings) -> int:
        return settings.jobs_max_retries if self.max_retries is None else self.max_retries

    def should_retry(self, error: BaseException) -> bool:
        return isinstance(error, self.retry_on) and not isinstance(error, PermanentJobError)


@dataclass(slots=True)
class JobContext:
    """What a handler gets: its job, the transaction's session and the services."""

    job_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    owner_id: uuid.UUID | None
    #: 1 on the first run; counts redeliveries after a lost worker too.
    attempt: int
    session: AsyncSession
    services: Services


class JobRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}

    def register(self, spec: JobSpec) -> None:
        existing = self._specs.get(spec.kind)
        if existing is not None and existing.handler is not spec.handler:
            raise ValueError(f"job kind {spec.kind!r} is already registered")
        self._specs[spec.kind] = spec

    def get(self, kind: str) -> JobSpec:
        try:
            return self._specs[kind]
        except KeyError:
            raise UnknownJobKindError(kind) from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def specs(self) -> list[JobSpec]:
        return sorted(self._specs.values(), key=lambda spec: spec.kind)


#: Filled at import time by `@job`, like a router's routes; never mutated afterwards.
registry = JobRegistry()


def job(
    kind: str,
    *,
    max_retries: int | None = None,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Callable[[H], H]:
    """Register an async handler for `kind`: `async def handler(ctx: JobContext) -> dict | None`.

    The returned dict (JSON) is stored as the job's result.
    """

    def register(handler: H) -> H:
        registry.register(JobSpec(kind, handler, max_retries, retry_on))
        return handler

    return register


def load_job_modules(settings: Settings) -> None:
    """Import every module that declares jobs or purge functions (idempotent)."""
    import slipway

    names = list(CORE_JOB_MODULES)
    for info in pkgutil.iter_modules(slipway.__path__):
        if info.ispkg and info.name not in _NOT_AREAS:
            candidate = f"slipway.{info.name}.tasks"
            if importlib.util.find_spec(candidate) is not None:
                names.append(candidate)
    if settings.environment is Environment.TESTING:
        names.extend(TESTING_JOB_MODULES)
    for name in names:
        importlib.import_module(name)
