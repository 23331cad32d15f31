"""OpenTelemetry spans, as an optional extra: consume → apply → push per batch, and stream open.

Off unless the process called ``setup`` with an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``)
and the packages of requirements-otel.txt are installed. Off, nothing of OpenTelemetry is
imported and ``span`` returns one shared no-op context manager: a batch pays a function
call, an event nothing.

A batch's records may belong to many traces. The batch span is the child of the record's
trace when all its records share one ``traceparent``; otherwise it links to each record's
(at most ``MAX_LINKS``), which tracing backends show as "follows from".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Final

logger = logging.getLogger(__name__)

MAX_LINKS: Final = 128
_NOOP: Final = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer once enabled


def setup(service: str, endpoint: str) -> bool:
    """Export spans of ``service`` over OTLP/HTTP when ``endpoint`` is set and the packages
    are installed; True if spans are on. Call once per process, before any span."""
    if not endpoint:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed (%s): "
            "no spans (pip install -r requirements-otel.txt)",
            exc,
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # The exporter reads the endpoint, headers and timeouts from OTEL_* itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use(trace.get_tracer("taskstream"))
    logger.info("OpenTelemetry spans of %s go to %s", service, endpoint)
    return True


def use(tracer: Any) -> None:
    """Make spans with ``tracer`` (None: off again). ``setup`` calls it; tests pass one
    with an in-memory exporter."""
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


def start(name: str, traceparents: Iterable[str | None] = (), **attributes: Any) -> Any:
    """A span that starts now and ends at ``end`` (a batch's, across its two stages); None
    when spans are off. ``traceparents``: the trace contexts it works for (a batch's
    records), read only when spans are on."""
    if _tracer is None:
        return None
    parent, links = _origin(traceparents)
    return _tracer.start_span(name, context=parent, links=links, attributes=_attrs(attributes))


def end(span: Any) -> None:
    if span is not None:
        span.end()


def span(
    name: str, traceparents: Iterable[str | None] = (), *, parent: Any = None, **attributes: Any
) -> AbstractContextManager[Any]:
    """A span around a block: the child of ``parent`` (a span from ``start``), else of the
    current span, else of ``traceparents`` as in ``start``."""
    if _tracer is None:
        return _NOOP
    return _span(name, traceparents, parent, attributes)


@contextlib.contextmanager
def _span(
    name: str, traceparents: Iterable[str | None], parent: Any, attributes: dict[str, Any]
) -> Iterator[Any]:
    from opentelemetry import trace

    links: list[Any] = []
    if parent is not None:
        context = trace.set_span_in_context(parent)
    else:
        context, links = _origin(traceparents)
    with _tracer.start_as_current_span(
        name,
        context=context,
        links=links,
        attributes=_attrs(attributes),
        # A refused stream or a batch retried after an outage is not a tracing error; the
        # logs and metrics say what happened.
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        yield current


def _origin(traceparents: Iterable[str | None]) -> tuple[Any, list[Any]]:
    """(parent context, links) for a span working for these trace contexts: the child of
    the one trace they share, or of the current span with a link to each (at most
    ``MAX_LINKS``)."""
    from opentelemetry import trace
    from opentelemetry.trace import Link, NonRecordingSpan

    unique = list(dict.fromkeys(tp for tp in traceparents if tp))
    if len(unique) == 1 and not trace.get_current_span().get_span_context().is_valid:
        return trace.set_span_in_context(NonRecordingSpan(_span_context(unique[0]))), []
    return None, [Link(_span_context(tp)) for tp in unique[:MAX_LINKS]]


def _attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def _span_context(traceparent: str) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags

    _, trace_id, span_id, flags = traceparent.split("-")
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )
