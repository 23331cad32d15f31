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
from collections.abc import Iterable
from typing import Any, Final

HEADER: Final = "traceparent"

# version "-" trace-id "-" parent-id "-" trace-flags, lower-case hex only
# (https://www.w3.org/TR/trace-context/#traceparent-header-field-values). Version 00 is
# exactly that, with a trace id and a parent id that are not all zeros; a later version
# keeps these four fields first and may append "-"-separated ones, which a reader of
# version 00 ignores. Checked on bytes: Kafka header values are bytes.
_VERSION_00: Final = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_LATER: Final = re.compile(
    rb"(?!00|ff)[0-9a-f]{2}-((?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2})(-.*)?",
    re.DOTALL,
)
SAMPLED: Final = "01"
_NONE: Final = object()
_PARSED_MAX: Final = 4096
_parsed: dict[bytes, str | None] = {}


def parse(value: str | bytes | None) -> str | None:
    """``value`` as a version-00 ``traceparent``, or None if it is not a valid one."""
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    # Every event of a task run carries the same value: a run's records after its first
    # cost a dict lookup, not a regex (bounded: cleared when full).
    known = _parsed.get(raw, _NONE)
    if known is not _NONE:
        return known  # type: ignore[return-value]
    if len(raw) == 55 and _VERSION_00.fullmatch(raw):
        result: str | None = raw.decode("ascii")
    else:
        later = _LATER.fullmatch(raw) if 55 <= len(raw) <= 512 else None
        result = None if later is None else "00-" + later.group(1).decode("ascii")
    if len(_parsed) >= _PARSED_MAX:
        _parsed.clear()
    _parsed[raw] = result
    return result


def from_headers(headers: Iterable[tuple[str, Any]] | dict[str, Any] | None) -> str | None:
    """The valid ``traceparent`` among Kafka record headers, or None. Several
    ``traceparent`` headers are ambiguous, so they count as none."""
    if not headers:
        return None
    if isinstance(headers, dict):  # not the Mapping ABC: its check costs more than the rest
        return parse(headers.get(HEADER))
    found: Any = _NONE
    for name, value in headers:
        if name == HEADER:
            if found is not _NONE:
                return None
            found = value
    return None if found is _NONE else parse(found)


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
