"""The ASGI lifespan protocol: what the process does when its server starts and stops.

On start-up, the objects made so far are frozen out of the garbage collector's walks
(``freeze_startup_objects``), and the collector runs less often (``YOUNG_THRESHOLD``).

On shutdown (after the server has closed its connections: ``manage.py serve``'s drain, or
plain uvicorn's graceful shutdown) the hub leaves its bus groups, so ``consume_events``
stops copying batches into this process's layer channel at once instead of when the
membership lapses (realtime/hub.py). A server without lifespan support (daphne) leaves that
to the lapse.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from realtime.hub import running_hub

logger = logging.getLogger(__name__)

# Net allocations of tracked objects between young collections (Python's default: 700).
# A full collection is considered only every 100 young ones, and walks every object the
# process holds: opening 10,000 idle streams (~68 objects each), the default made 7 full
# collections of up to 0.6 s, 2.4 s of the opens' ~12 s of CPU; after start-up, M4's run
# made 11 at the default and 1 at 7,000 (bench/notes.md, "#9 M4"). A stream's objects
# mostly die by reference count, so the garbage left for a later collection stays small.
YOUNG_THRESHOLD = 7000


def freeze_startup_objects() -> None:
    """Leave what Django, the app and their imports made at start-up out of every later
    garbage collection (``gc.freeze``). They live as long as the process, yet each full
    collection walked them all: 150-265 ms pauses, one within seconds of every thousand
    streams opened, which set M1's p99 at 10 events/s (bench/notes.md, "#9 M1 per-wake
    cost"). Then collections run every ``YOUNG_THRESHOLD`` allocations."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


async def lifespan_application(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            freeze_startup_objects()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            hub = running_hub()
            if hub is not None:
                await hub.stop()
                logger.info("hub stopped: left the bus groups")
            await send({"type": "lifespan.shutdown.complete"})
            return
