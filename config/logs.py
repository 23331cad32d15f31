"""Structured logs: every line, ours and the standard library's, rendered by structlog.

``TASKSTREAM_LOG_FORMAT=json`` writes one JSON object per line (the default without
``DJANGO_DEBUG``), ``console`` readable key=value lines (the default under ``make run``).
Project code logs through structlog (``structlog.get_logger``); Django, uvicorn, librdkafka
and every other library log through the standard library, and their records go through
the same processors by ``ProcessorFormatter``'s ``foreign_pre_chain``. Both get the
context bound to the current request, stream or batch (``structlog.contextvars``).

Why structlog and not django-structlog: django-structlog's value is a Django request
middleware (and Celery signals), but Taskstream's busiest paths are not Django requests:
the SSE stream is a Channels consumer and ``consume_events`` a Kafka loop. Their context
is bound here and in ``realtime.requestlog``, so the extra package would add a second
request middleware and little else (docs/operations.md, "Logs").
"""

from __future__ import annotations

import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog
from structlog.typing import Processor

from realtime.ingestlog import RECORDS_LOGGER

FORMATS: Final = ("json", "console")
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

REDACTED: Final = "[redacted]"
# A value under a key that names a credential is never written, whatever it holds.
_SECRET_KEY = re.compile(r"password|passwd|secret|token|authorization|cookie|jwt", re.I)
# A JWT (header.payload.signature, base64url, the header starting '{"' = "eyJ") anywhere
# in a text: the access token is also the stream cookie's value.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Defence in depth: no code logs a credential on purpose, and this drops any that
    slips into a field named like one or into a text as a JWT."""
    for key, value in event_dict.items():
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and "eyJ" in value:
            event_dict[key] = _JWT.sub(REDACTED, value)
    return event_dict


def _leading(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Time, level, logger and message first, then the context: easier on a reader."""
    head = {
        k: event_dict.pop(k) for k in ("timestamp", "level", "logger", "event") if k in event_dict
    }
    return {**head, **event_dict}


def _shared() -> list[Processor]:
    """What every line gets, structlog's or the standard library's."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_structlog() -> None:
    """structlog hands its events to the standard library, whose handler renders them:
    one configuration (levels, handlers) for both."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # a disabled level costs one check
            *_shared(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter(fmt: str) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter of every handler: ``json`` or ``console``."""
    renderer: Processor
    tail: list[Processor]
    if fmt == "json":
        tail = [structlog.processors.format_exc_info, redact, _leading]
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        # The traceback becomes text before redaction, as in JSON: the console renderer
        # would otherwise format it after every processor ran, credentials included (an
        # exception's message can quote a token). It prints the text as is, unstyled.
        tail = [structlog.processors.format_exc_info, redact]
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )


def logging_config(fmt: str, level: str, *, records: bool) -> dict[str, Any]:
    """Django's ``LOGGING``: one stderr handler with the structlog formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": formatter, "fmt": fmt}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's defaults give these handlers of their own (plain text, or debug
            # only); without them their records reach the root handler like any other.
            "django": {"handlers": [], "level": level, "propagate": True},
            "django.server": {"handlers": [], "level": level, "propagate": True},
            # One line per consumed record: off unless TASKSTREAM_LOG_RECORDS, since a
            # busy consumer handles thousands of records a second.
            RECORDS_LOGGER: {"level": "INFO" if records else "WARNING"},
        },
    }
