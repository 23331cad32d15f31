"""How a stream's own task waits for the client's disconnect or its writer's end (issue #9:
no watcher task per stream). The writer's end must not leak a cancel into the stream's
clean-up, and a cancel from anyone else must go on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime.stream import _until_disconnected_or_ended

DEADLINE = 5.0


class Receive:
    """The server's receive(): the request first, then whatever ``messages`` is given."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.messages.put_nowait({"type": "http.request", "more_body": False})

    async def __call__(self) -> dict[str, Any]:
        return await self.messages.get()


async def test_the_writers_end_ends_the_wait_and_leaves_the_task_uncancelled() -> None:
    release = asyncio.Event()
    writer = asyncio.create_task(release.wait())
    receive = Receive()

    async def stream() -> bool:
        await _until_disconnected_or_ended(receive, writer)  # type: ignore[arg-type]
        task = asyncio.current_task()
        assert task is not None
        # What the stream does next (its clean-up) must not be cancelled.
        await asyncio.sleep(0)
        return task.cancelling() == 0

    running = asyncio.create_task(stream())
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(DEADLINE):
        assert await running is True


async def test_a_disconnect_ends_the_wait_and_the_writers_later_end_cancels_nothing() -> None:
    release = asyncio.Event()
    writer = asyncio.create_task(release.wait())
    receive = Receive()
    cleaned = asyncio.Event()

    async def stream() -> None:
        await _until_disconnected_or_ended(receive, writer)  # type: ignore[arg-type]
        release.set()  # the writer ends while the clean-up runs
        await writer
        for _ in range(5):  # turns of the loop in which a stray cancel would arrive
            await asyncio.sleep(0)
        cleaned.set()

    running = asyncio.create_task(stream())
    receive.messages.put_nowait({"type": "http.disconnect"})
    async with asyncio.timeout(DEADLINE):
        await running
    assert cleaned.is_set()


async def test_the_writer_ending_in_the_same_turn_as_the_disconnect_cancels_nothing() -> None:
    writer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    receive = Receive()
    cleaned = asyncio.Event()

    async def stream() -> None:
        await _until_disconnected_or_ended(receive, writer)  # type: ignore[arg-type]
        for _ in range(5):
            await asyncio.sleep(0)
        cleaned.set()

    running = asyncio.create_task(stream())
    await asyncio.sleep(0)
    # Both at once: the stream is woken by the disconnect, the writer's callback is due.
    receive.messages.put_nowait({"type": "http.disconnect"})
    writer.set_result(None)
    async with asyncio.timeout(DEADLINE):
        await running
    assert cleaned.is_set()


async def test_a_cancel_from_elsewhere_goes_on() -> None:
    writer = asyncio.create_task(asyncio.Event().wait())
    receive = Receive()
    running = asyncio.create_task(_until_disconnected_or_ended(receive, writer))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(DEADLINE):
            await running
    writer.cancel()
