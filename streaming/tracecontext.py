"""W3C Trace Context (``traceparent``): parse strictly, make one, derive a child.

A task event's trace context travels in its Kafka record's ``traceparent`` header (set by
the publisher SDK or any producer), is logged by ``consume_events`` on the lines about that
record, kept in the event log and sent in the SSE envelope (docs/operations.md). A value
that is not a valid ``traceparent`` is ignored, never an error: tracing must not cost an
event.

No Django here: the publisher SDK (``streaming.publisher``) imports this module.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

HEADER: Final = "traceparent"

# version "-" trace-id "-" parent-id "-" trace-flags, lower-case hex only
# (https://www.w3.org/TR/trace-context/#traceparent-header-field-values). Version 00 is
# exactly that; a later version keeps these four fields first and may append
# "-"-separated ones, which a reader of version 00 ignores.
_FIELDS: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
SAMPLED: Final = "01"


def parse(value: str | bytes | None) -> str | None:
    """``value`` as a version-00 ``traceparent``, or None if it is not a valid one."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _FIELDS.fullmatch(value) if len(value) < 512 else None
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None  # ff is forbidden; version 00 has nothing after its flags
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


def from_headers(headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> str | None:
    """The valid ``traceparent`` among Kafka record headers, or None. Several
    ``traceparent`` headers are ambiguous, so they count as none."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = [value for name, value in pairs if name == HEADER]
    return parse(found[0]) if len(found) == 1 else None


def generate() -> str:
    """A new trace: random trace and parent ids, sampled (so a tracing backend downstream
    records what follows from it)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{SAMPLED}"


def child(parent: str) -> str:
    """A new span of ``parent``'s trace (a valid ``traceparent``): same trace id and
    flags, a new parent id."""
    return f"{parent[:36]}{secrets.token_hex(8)}{parent[52:]}"


def trace_id(traceparent: str) -> str:
    """The trace id of a valid ``traceparent`` (what tracing backends search by)."""
    return traceparent[3:35]
