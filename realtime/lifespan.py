"""The ASGI lifespan protocol: what the process does when its server starts and stops.

On shutdown (after the server has closed its connections: ``manage.py serve``'s drain, or
plain uvicorn's graceful shutdown) the hub leaves its bus groups, so ``consume_events``
stops copying batches into this process's layer channel at once instead of when the
membership lapses (realtime/hub.py). A server without lifespan support (daphne) leaves that
to the lapse.
"""

from __future__ import annotations

import logging
from typing import Any

from realtime.hub import running_hub

logger = logging.getLogger(__name__)


async def lifespan_application(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            hub = running_hub()
            if hub is not None:
                await hub.stop()
                logger.info("hub stopped: left the bus groups")
            await send({"type": "lifespan.shutdown.complete"})
            return
