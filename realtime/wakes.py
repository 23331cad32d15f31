"""Wakes deferred a few milliseconds, so that a busy process sends more events per write.

A stream's writer wakes once per hub message that has items for it, and each wake costs
the same (the task's step, one write system call: ~40 CPU-µs at 1,000 streams, #9 M1),
whether it carries one event or ten. Woken at once, a user's streams are all written before
the hub reads its next message: when messages come faster than 1,000 wakes take, they queue
in Redis, and every wake still carries one event, so a process that falls behind stays
behind (M1's 25 events/s step). Woken ``LINGER_SECONDS`` after the first offer, together,
they take whatever the hub received meanwhile: nothing more when the process keeps up (the
events wait that long), and everything queued when it does not.

One timer per loop and linger, not per stream or per wake.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

# Meant to be longer than a few hub receives (each one or two Redis round trips) and short
# against the stream's latency goal (250 ms at p99); 5 ms is the one value measured
# (bench/notes.md, "#9 M1 per-wake cost").
LINGER_SECONDS = 0.005


class Wakeable(Protocol):
    def wake_if_due(self) -> None: ...


class Wakes:
    """The streams of one loop offered items since the last flush. It does not hold the
    loop (the loop is the key it is kept under, weakly)."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: list[Wakeable] = []

    def defer(self, subscriber: Wakeable, loop: asyncio.AbstractEventLoop) -> None:
        """Wake ``subscriber`` at the next flush of ``loop``'s wakes (the caller adds each
        one once per flush)."""
        if not self._due:
            loop.call_later(LINGER_SECONDS, self._flush)
        self._due.append(subscriber)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for subscriber in due:
            subscriber.wake_if_due()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wakes] = weakref.WeakKeyDictionary()


def wakes_of(loop: asyncio.AbstractEventLoop) -> Wakes:
    """The loop's ``Wakes`` (tests run several loops in one process)."""
    wakes = _by_loop.get(loop)
    if wakes is None:
        wakes = _by_loop[loop] = Wakes()
    return wakes
