"""A lone app node (`manage.py serve`) for tests that need the real server but not the
whole stack: hostile connections, a Redis restart seen by one node."""

from __future__ import annotations

from pathlib import Path

import httpx
from rest_framework_simplejwt.tokens import AccessToken

from tests.conftest import Proc, free_port
from tests.sse import StreamReader, wait_until


def serving(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def start_node(env: dict[str, str], log_dir: Path, name: str = "serve") -> tuple[Proc, str]:
    """Start a node with ``env``; return it and its base URL once it answers /healthz."""
    port = free_port()
    proc = Proc(name, ["manage.py", "serve", "--port", str(port)], env, log_dir).start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: serving(base), 60, f"{name} to answer /healthz")
    return proc, base


def open_stream(base: str, user_id: int) -> StreamReader:
    """A started reader of ``user_id``'s stream on the node at ``base`` (a token signed
    with the test settings' key, which the node shares)."""
    access = AccessToken()
    access["user_id"] = user_id
    return StreamReader(
        f"{base}/api/v1/events/stream", {"Authorization": f"Bearer {access}"}
    ).start()
