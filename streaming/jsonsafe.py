"""What JSON the product accepts: only values PostgreSQL's jsonb, the channel layer and a
browser's ``JSON.parse`` all hold the same way.

Refused, with the path of the offending value: NaN and infinities (not JSON; jsonb rejects
them), NUL in any string or key (PostgreSQL text cannot hold it), lone UTF-16 surrogates
(not encodable as UTF-8), nesting deeper than ``max_depth`` (Python's parsers and
serialisers recurse), and types JSON does not have. The API (``tasks.parsers``) and the
Kafka adapter (``streaming.adapter``) both check with ``check``, so a value one accepts
the other accepts too.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import orjson

MAX_DEPTH: Final = 32
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """A value the product does not accept; ``path`` names it (``params.a[2]``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or 'the value'}: {problem}")
        self.path = path
        self.problem = problem


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON (no NaN, no lone surrogates) and ``check`` it."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnsafeJSON("", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise UnsafeJSON("", f"nested deeper than {max_depth} levels") from None
    # orjson has refused NaN, infinities and lone surrogates already, and JSON text can
    # only hold a NUL as the escape \u0000: without one, only the depth is left to check
    # (the common case, at ingest's rate). Otherwise the full walk finds the path.
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    deep = _may_nest_deeper(text, max_depth) and _depth_exceeds(value, max_depth)
    if deep or b"\\u0000" in text:
        check(value, max_depth=max_depth)
    return value


def _may_nest_deeper(text: bytes, max_depth: int) -> bool:
    """Whether ``text`` holds more than ``max_depth`` opening brackets: fewer cannot nest
    deeper (brackets inside strings only raise the count). Counting bytes runs in C; the walk
    of ``_depth_exceeds`` is left for the rare value with many containers."""
    return text.count(b"{") + text.count(b"[") > max_depth


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than ``max_depth`` (no paths, no string checks)."""
    level: list[Any] = [value]
    for _ in range(max_depth):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return bool(level)


def check(value: Any, *, max_depth: int = MAX_DEPTH, path: str = "") -> None:
    """Raise ``UnsafeJSON`` for the first value in ``value`` the product cannot hold.

    Iterative, so a hostile depth cannot exhaust the interpreter's stack here.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, bool) or item is None or isinstance(item, int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UnsafeJSON(where, "numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            if depth >= max_depth:
                raise UnsafeJSON(where, f"nested deeper than {max_depth} levels")
            for key, child in item.items():
                if not isinstance(key, str):
                    raise UnsafeJSON(where, "object keys must be strings")
                _check_text(key, where, key=True)
                stack.append((child, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                raise UnsafeJSON(where, f"nested deeper than {max_depth} levels")
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            raise UnsafeJSON(where, f"{type(item).__name__} is not a JSON type")


def _check_text(text: str, where: str, *, key: bool = False) -> None:
    bad = _BAD_TEXT.search(text)
    if bad is None:
        return
    what = "a key" if key else "a string"
    if bad.group() == "\x00":
        raise UnsafeJSON(where, f"{what} contains a NUL character")
    raise UnsafeJSON(where, f"{what} contains a lone surrogate (U+{ord(bad.group()):04X})")
