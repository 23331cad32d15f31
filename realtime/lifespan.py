"""The ASGI lifespan protocol: what the process does when its server starts and stops.

On start-up, the objects made so far are frozen out of the garbage collector's walks
(``freeze_startup_objects``).

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


def freeze_startup_objects() -> None:
    """Leave what Django, the app and their imports made at start-up out of every later
    garbage collection (``gc.freeze``). They live as long as the process, yet each full
    collection walked them all: 150-265 ms pauses, one within seconds of every thousand
    streams opened, which set M1's p99 at 10 events/s (bench/notes.md, "#9 M1 per-wake
    cost")."""
    gc.collect()
    gc.freeze()


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
