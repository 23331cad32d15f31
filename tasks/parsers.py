"""The API's one parser: strict JSON by the rules of ``streaming.jsonsafe``, on every endpoint.

A body the product cannot carry (not JSON, NaN or Infinity, NUL, a lone surrogate, nested
deeper than ``jsonsafe.MAX_DEPTH``) is a 400 before any view or serializer sees it:

- when the bad value is inside a member of an object body, the member is named the way
  validation errors name a field: ``{"params": ["params.a[2]: a string contains a NUL
  character"]}``;
- otherwise the body as a whole: ``{"detail": "JSON parse error - …", "code": "parse_error"}``.

``ParseBody`` makes every view parse its body, also views that ignore it, so a bad body is
refused wherever it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission

from streaming import jsonsafe

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views initialises
    from rest_framework.request import Request
    from rest_framework.views import APIView


class StrictJSONParser(JSONParser):
    """UTF-8 JSON parsed with ``jsonsafe.loads``; whatever it refuses is a 400 naming where.

    A ``JSONParser`` subclass on purpose: DRF then hands it ``request.body``, which Django
    bounds by ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (a larger body is a 413, ``tasks.views``).
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = stream.read()
        try:
            return jsonsafe.loads(raw)
        except jsonsafe.UnsafeJSON as refused:
            raise _refusal(raw, refused) from None


def _refusal(raw: bytes, refused: jsonsafe.UnsafeJSON) -> ParseError | ValidationError:
    """The 400 for a body ``jsonsafe`` refused, naming the member and path when they are known.

    orjson stops at NaN, Infinity and lone surrogates without saying where in the tree they
    are; Python's lenient parser reads them, and ``jsonsafe.check`` then finds the path. A
    body nested past what either parser goes into keeps orjson's line and column.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return ParseError(f"JSON parse error - {_describe(refused)}")
    members = body.items() if isinstance(body, dict) else []
    for name, value in members:
        try:
            jsonsafe.check({name: value})  # the path and the depth as in the whole body
        except jsonsafe.UnsafeJSON as found:
            if found.path:  # inside the member, not its name
                return ValidationError({name: [_describe(found)]}, code="invalid_json")
    try:
        jsonsafe.check(body)
    except jsonsafe.UnsafeJSON as found:
        refused = found
    return ParseError(f"JSON parse error - {_describe(refused)}")


def _describe(refused: jsonsafe.UnsafeJSON) -> str:
    return f"{refused.path}: {refused.problem}" if refused.path else refused.problem


class ParseBody(BasePermission):
    """Parse the request body before the view runs, after authentication.

    Views that never read their body (cancel, the stream cookie) would otherwise take any
    bytes at all; with this, every endpoint answers a body the API cannot carry with the
    same 400 (or 413). Listed after ``IsAuthenticated``, so an anonymous caller's body on
    the task API is never parsed.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        request.data  # noqa: B018 -- parsing is the point; it raises ParseError and the like
        return True
