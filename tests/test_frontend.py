"""The browser client (issue #11, frontend/): its unit tests, type checks and generated-types
freshness without services, and its Playwright scenarios in Debian's Chromium against the real
stack. The npm side is installed and built by `make frontend` (a prerequisite of `make test`)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.browser import CHROMIUM, e2e_user, own_server
from tests.conftest import ROOT, Stack

FRONTEND = ROOT / "frontend"
BIN = FRONTEND / "node_modules" / ".bin"


def run_npm_tool(args: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a tool of frontend/ and return its output; fail the test with it on non-zero exit."""
    if not (BIN / "vitest").exists():
        pytest.fail("frontend/node_modules is missing: run `make frontend` (make test does)")
    started = time.monotonic()
    result = subprocess.run(
        args,
        cwd=FRONTEND,
        env={**os.environ, **(env or {}), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CI": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    print(f"\n$ {' '.join(args)}  ({time.monotonic() - started:.1f} s)\n{output[-4000:]}")
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{output[-6000:]}"
    return output


def test_generated_event_types_are_fresh() -> None:
    run_npm_tool(["node", "scripts/gen-types.mjs", "--check"], timeout=60)


def test_typescript_strict_build() -> None:
    run_npm_tool([str(BIN / "tsc"), "-b", "packages/client", "packages/react"], timeout=180)
    for project in ("demo", "admin", "test"):
        run_npm_tool([str(BIN / "tsc"), "-p", f"{project}/tsconfig.json"], timeout=180)


def test_vitest_unit_tests() -> None:
    output = run_npm_tool([str(BIN / "vitest"), "run"], timeout=300)
    assert " passed" in output and " failed" not in output


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(900)
def test_playwright_scenarios(stack: Stack, django_user_model: type[User], tmp_path: Path) -> None:
    users = {n: e2e_user(django_user_model, n) for n in ("tabs", "refresh", "devices", "reset")}
    # DEBUG serves the demo bundle from realtime/static/ as `make run` does.
    with (
        own_server(stack.env, tmp_path, "frontend_server", DJANGO_DEBUG="true") as (server, base),
        own_server(
            stack.env,
            tmp_path,
            "frontend_short_tokens",
            DJANGO_DEBUG="true",
            JWT_ACCESS_SECONDS="6",
            TASKSTREAM_RETRY_MS="300",
        ) as (short_server, short_base),
    ):
        try:
            # TASKSTREAM_E2E_ARGS adds Playwright options when working on one scenario,
            # e.g. `--grep stream-reset --repeat-each 5`.
            extra = shlex.split(os.environ.get("TASKSTREAM_E2E_ARGS", ""))
            output = run_npm_tool(
                [str(BIN / "playwright"), "test", *extra],
                timeout=800,
                env={
                    "TASKSTREAM_E2E_BASE": base,
                    "TASKSTREAM_E2E_SHORT_TOKEN_BASE": short_base,
                    "TASKSTREAM_E2E_USERS": json.dumps(users),
                    "TASKSTREAM_E2E_CHROMIUM": CHROMIUM,
                },
            )
        except AssertionError:
            print(f"--- {server.name}\n{server.log()[-4000:]}")
            print(f"--- {short_server.name}\n{short_server.log()[-4000:]}")
            raise
    if not os.environ.get("TASKSTREAM_E2E_ARGS"):
        assert "4 passed" in output, output[-3000:]
