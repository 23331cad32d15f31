"""How the stream's writer hands its writes to the server (realtime.writer): the shortcut
past AsyncHttpConsumer.send_body."""

from __future__ import annotations

from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.generic.http import AsyncHttpConsumer

from realtime.hub import Subscriber
from realtime.staff import StaffStreamConsumer
from realtime.stream import EventStreamConsumer
from realtime.writer import StreamWriter


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
