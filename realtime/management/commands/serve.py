"""Serve the ASGI application with uvicorn, draining streams on SIGTERM.

Plain uvicorn stops accepting on SIGTERM and then waits for open responses, which for
event streams never end by themselves, until its graceful timeout cuts them. Here the
first SIGTERM starts a drain instead: /readyz fails, new streams end at once with a retry
hint, and open streams end cleanly at random moments over TASKSTREAM_DRAIN_SECONDS, so
their reconnects spread over the other nodes. Then the server exits. A second SIGTERM or
SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType
from typing import Any

import uvicorn
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.hub import get_hub
from realtime.listeners import bind_listeners
from realtime.routing import build_application
from realtime.server import BoundedHttpProtocol
from streaming import conf, tracing
from streaming.loop import exit_by_deadline

logger = logging.getLogger(__name__)

# A node told to stop exits by TASKSTREAM_DRAIN_SECONDS + this (its grace period is + 5 s).
STOP_MARGIN_SECONDS = 4.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining = False

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining or self.loop is None:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        window = conf.get().DRAIN_SECONDS
        logger.info("draining: ending streams over %.1f s, then exiting", window)
        # uvicorn is done 3 s after the window (1 s, then its 2 s graceful timeout); what
        # could still hold the process is a request thread blocked on a dependency (a
        # frozen Redis: 10 s socket timeout) that the interpreter would join at exit.
        exit_by_deadline("serve", window + STOP_MARGIN_SECONDS)
        self.loop.call_soon_threadsafe(self._drain, window)

    def _drain(self, window: float) -> None:
        assert self.loop is not None
        get_hub().drain(window)
        # A second to let the last stream's final bytes and the reconnects' refusals out.
        self.loop.call_later(window + 1.0, setattr, self, "should_exit", True)


class Command(BaseCommand):
    help = "Serve HTTP and event streams (uvicorn) with a graceful drain on SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--proxy-headers", action="store_true")
        parser.add_argument(
            "--backlog", type=int, default=2048, help="pending connections the kernel queues"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tracing.setup("taskstream-web", conf.get().OTEL_ENDPOINT)
        config = uvicorn.Config(
            build_application(),
            host=options["host"],
            port=options["port"],
            # Start-up objects frozen out of the GC; the hub leaves its bus groups at
            # shutdown (realtime/lifespan.py).
            lifespan="on",
            proxy_headers=options["proxy_headers"],
            backlog=options["backlog"],
            access_log=False,
            # uvicorn's own loggers propagate to the root logger and its structlog
            # renderer (config/logs.py) instead of uvicorn's plain-text config.
            log_config=None,
            # Deadlines on reading each request's headers and body (slow or half-sent
            # requests): realtime/server.py.
            http=BoundedHttpProtocol,
            # Counted from the end of the drain window (streams have ended by then): what
            # is still open 2 s later is cut, so the node exits within DRAIN_SECONDS + 5 s
            # even when a dependency hangs its clean-up (Redis down: tests/test_chaos.py).
            timeout_graceful_shutdown=2,
        )
        # Several sockets on the address, so that a burst of connections is accepted
        # several per turn of the loop (realtime/listeners.py).
        try:
            sockets = bind_listeners(options["host"], options["port"], options["backlog"])
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from exc
        logger.info(
            "serving on %s:%s (%d listening sockets)",
            options["host"],
            sockets[0].getsockname()[1],
            len(sockets),
        )
        DrainingServer(config).run(sockets=sockets)
        logger.info("serve stopped")
