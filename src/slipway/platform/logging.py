"""structlog setup: JSON lines in production, console in development.

The stdlib loggers (uvicorn, gunicorn, sqlalchemy, alembic, celery) go through the same
processor chain and renderer, so under LOG_FORMAT=json every line the process prints is one
JSON object, and every line emitted while a request is handled carries its request_id.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, Literal

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from slipway.platform.context import request_id_var

_SECRET_KEYS = frozenset(
    {
        "password",
        "new_password",
        "current_password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "cookie",
        "secret",
        "secret_key",
        "idempotency_key",
    }
)


def add_request_id(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # A ContextVar read is cheaper than structlog's bind/unbind on every request.
    request_id = request_id_var.get()
    if request_id is not None and "request_id" not in event_dict:
        event_dict["request_id"] = request_id
    return event_dict


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Last line of defence: a key that names a secret never reaches the output."""
    for key in event_dict.keys() & _SECRET_KEYS:
        event_dict[key] = "[redacted]"
    return event_dict


_extra_processors: list[Processor] = []


def register_processor(processor: Processor) -> None:
    """Let optional integrations (tracing) add fields such as trace_id to every line."""
    if processor not in _extra_processors:
        _extra_processors.append(processor)


def _add_extra(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    for processor in _extra_processors:
        event_dict = processor(logger, name, event_dict)  # type: ignore[assignment]
    return event_dict


def drop_color_message(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # uvicorn attaches an ANSI-coloured duplicate of its message for its own formatter.
    event_dict.pop("color_message", None)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "console"] = "json", *, stream: Any = None
) -> None:
    """Configure structlog and the stdlib root logger. Safe to call more than once."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        _add_extra,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Processor
    # Tracebacks never include local variables: they hold request bodies, passwords,
    # tokens and the settings (DATABASE_URL with its password). structlog shows them by
    # default in both renderers.
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        exc_processors: list[Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
        exc_processors = []

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc_processors,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)

    # Third-party loggers propagate to the root handler; drop their own handlers so nothing
    # prints twice or in another format.
    for name in (
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
        "gunicorn",
        "gunicorn.error",
        "gunicorn.access",
        "sqlalchemy",
        "alembic",
        "celery",
        "asyncio",
        "httpx",
    ):
        lib_logger = logging.getLogger(name)
        lib_logger.handlers.clear()
        lib_logger.propagate = True
    # The app writes its own access line with route and request_id; uvicorn's duplicates it
    # and costs about a quarter of throughput (PERF-NOTES).
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at DEBUG (Idempotency-Keys,
    # token digests); never let LOG_LEVEL=DEBUG turn that on.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def uvicorn_log_config() -> dict[str, Any]:
    """A dictConfig for uvicorn that leaves our root handler in charge."""
    return {"version": 1, "disable_existing_loggers": False}


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
