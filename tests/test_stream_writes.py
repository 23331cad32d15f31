"""How the stream's writer hands its writes to the server and counts them (realtime.writer):
the shortcut past AsyncHttpConsumer.send_body, and the per-turn frame count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.generic.http import AsyncHttpConsumer

from realtime.inbox import Subscriber
from realtime.staff import StaffStreamConsumer
from realtime.stream import EventStreamConsumer
from realtime.writer import StreamWriter, sent_count
from streaming import metrics


@pytest.mark.parametrize("consumer", [EventStreamConsumer, StaffStreamConsumer])
def test_the_write_shortcut_skips_only_channels_own_send(consumer: type[Any]) -> None:
    """``StreamWriter._send`` calls the server's send (``base_send``) with the message
    ``send_body`` makes: right only while neither Channels method is overridden."""
    assert consumer.send is AsyncConsumer.send
    assert consumer.send_body is AsyncHttpConsumer.send_body


async def test_a_write_is_the_message_send_body_would_make() -> None:
    class Writer(StreamWriter):
        def __init__(self) -> None:
            self.sent_messages: list[dict[str, Any]] = []
            self.subscriber = Subscriber(1, limit=1)
            self.base_send = self.record

        async def record(self, message: dict[str, Any]) -> None:
            assert self.subscriber.sending_since > 0  # watched while the write is pending
            self.sent_messages.append(message)

    writer = Writer()
    await writer._send(b"data: 1\n\n")
    await writer._send(b"", final=True)
    assert writer.sent_messages == [
        {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    assert writer.subscriber.sending_since == 0.0


def counted() -> float:
    return metrics.STREAM_FRAMES_SENT._value.get()  # type: ignore[no-any-return]


async def test_frames_sent_are_counted_once_the_loop_turns() -> None:
    before = counted()
    loop = asyncio.get_running_loop()
    for _ in range(3):
        sent_count.add(2, loop)
    assert counted() == before  # not yet: at the end of this turn
    # A callback queued after the adds runs after the flush they queued (FIFO).
    turned = loop.create_future()
    loop.call_soon(turned.set_result, None)
    async with asyncio.timeout(5):
        await turned
    assert counted() == before + 6


async def test_frames_sent_before_the_stream_s_first_wait_are_counted_at_once() -> None:
    before = counted()
    sent_count.add(4, None)
    assert counted() == before + 4


def test_a_count_pending_on_another_loop_is_not_lost() -> None:
    """Tests run several loops: a count left pending on a loop that ended is added with
    the next count made on another."""
    before = counted()
    old = asyncio.new_event_loop()
    sent_count.add(5, old)  # its flush never runs: the loop is closed first
    old.close()
    new = asyncio.new_event_loop()
    try:
        sent_count.add(1, new)
        assert counted() == before + 6
    finally:
        new.close()
