"""A stream's log lines (#13, item 1), in-process: one open line, one close line saying why
it ended and what it sent, the user and stream ids on both, and refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from realtime import bus, lifecycle
from realtime.hub import get_hub
from tests.fakes import task_event as event
from tests.logcapture import Captured, json_logs
from tests.test_stream import (
    ALICE,
    EPOCH,
    Stream,
    bearer,
    in_memory_layer_and_store,
    push,
    token,
)

__all__ = ["in_memory_layer_and_store"]  # the autouse fixture of tests/test_stream.py


def closed(captured: Captured) -> dict[str, Any]:
    (line,) = captured.events("stream closed")
    return line


async def test_open_and_close_lines_carry_the_user_the_stream_and_the_counts() -> None:
    with json_logs() as captured:
        stream = Stream(bearer(ALICE))
        assert (await stream.open())["status"] == 200
        await push([event(ALICE, 0), event(ALICE, 1)])
        assert len(await stream.events(2)) == 2
        await stream.disconnect()
    (opened,) = captured.events("stream opened")
    line = closed(captured)
    assert opened["user_id"] == line["user_id"] == ALICE
    assert opened["stream_id"] == line["stream_id"] and len(line["stream_id"]) == 32
    assert opened["resumed_from"] == "head" and opened["reset"] is None
    assert line["reason"] == "client-gone" and line["events"] == 2 and line["heartbeats"] == 0
    assert line["level"] == "info" and line["seconds"] >= 0


async def close_reason(
    headers: list[tuple[bytes, bytes]], meanwhile: Callable[[], None] = lambda: None
) -> str:
    """Open a stream, do ``meanwhile``, wait for its end: the close line's reason."""
    with json_logs() as captured:
        stream = Stream(headers)
        await stream.open()
        meanwhile()
        await stream.until_end(within=5)
        await stream.disconnect()
    reason: str = closed(captured)["reason"]
    return reason


async def test_an_overflow_is_the_reason_the_close_line_gives(settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "STREAM_QUEUE_SIZE": 2}
    items = [bus.to_item(event(ALICE, n), n - 1, EPOCH) for n in range(5)]
    message = {"type": bus.MESSAGE_TYPE, "events": [(ALICE, items)]}
    assert await close_reason(bearer(ALICE), lambda: get_hub().deliver(message)) == "overflow"


async def test_token_expiry_lifetime_and_drain_are_reasons_too(settings: Any) -> None:
    expiring = bearer(ALICE, lifetime=timedelta(seconds=1))
    assert await close_reason(expiring) == "token-expired"

    settings.TASKSTREAM = {**settings.TASKSTREAM, "STREAM_MAX_SECONDS": 1.0}
    assert await close_reason(bearer(ALICE)) == "lifetime"

    settings.TASKSTREAM = {**settings.TASKSTREAM, "STREAM_MAX_SECONDS": 1800.0}
    try:
        assert await close_reason(bearer(ALICE), lambda: get_hub().drain(0.01)) == "drain"
    finally:
        get_hub().draining = False
        lifecycle.draining.clear()


async def test_a_refusal_is_one_line_without_the_credential() -> None:
    bad = token(ALICE, lifetime=timedelta(seconds=-5))
    with json_logs() as captured:
        stream = Stream([(b"authorization", f"Bearer {bad}".encode())])
        assert (await stream.open())["status"] == 401
        await stream.comm.wait(5)
    (line,) = captured.events("stream refused")
    assert (line["status"], line["code"]) == (401, "token_not_valid")
    assert bad not in captured.text() and bad.split(".")[2] not in captured.text()
    assert captured.events("stream opened") == []
