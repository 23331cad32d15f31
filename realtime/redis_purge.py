"""What the Redis hot store (``realtime.store.RedisHotStore``) forgets of a source whose
topic was re-created: its offsets start again at 0, so every user's events of the old topic,
their partition index entries and the partition heads name records that no longer exist
(docs/operations.md, "Re-creating the events topic").

A rare operation, once per re-created topic: SCAN, and a thousand keys per round trip.
"""

from __future__ import annotations

from typing import Any

_CHUNK = 1000


async def purge_source(redis: Any, prefix: str, source: str) -> tuple[int, int]:
    """Unlink ``source``'s streams (``r:{user}:{source}:{partition}``) and heads
    (``head:{source}:{partition}``) and drop its members from every user's index
    (``rp:{user}``); return how many keys were unlinked and how many indexes changed."""
    glob = "".join(f"\\{c}" if c in "*?[]\\" else c for c in source)
    streams, heads = f"{prefix}:r:", f"{prefix}:head:"
    doomed: list[str] = []
    # The source's own keys only: a pattern also matches a longer name that ends the same.
    async for key in redis.scan_iter(match=f"{streams}*:{glob}:*", count=_CHUNK):
        if _source(key[len(streams) :].split(":", 1)[1]) == source:
            doomed.append(key)
    async for key in redis.scan_iter(match=f"{heads}{glob}:*", count=_CHUNK):
        if _source(key[len(heads) :]) == source:
            doomed.append(key)
    for start in range(0, len(doomed), _CHUNK):
        await redis.unlink(*doomed[start : start + _CHUNK])
    indexes = [key async for key in redis.scan_iter(match=f"{prefix}:rp:*", count=_CHUNK)]
    changed = 0
    for start in range(0, len(indexes), _CHUNK):
        chunk = indexes[start : start + _CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for index in chunk:
                pipe.smembers(index)
            found = await pipe.execute()
            for index, members in zip(chunk, found, strict=True):
                gone = [m for m in members if _source(m) == source]
                if gone:
                    pipe.srem(index, *gone)
                    changed += 1
            await pipe.execute()
    return len(doomed), changed


def _source(member: str) -> str:
    """The source of ``{source}:{partition}``."""
    return member.rpartition(":")[0]
