"""Production settings (#10, item 2): `check --deploy` is clean with the environment
docs/deployment.md documents; nginx keeps /metrics and /admin/ to operators and rate-limits
them; a local (debug) run signs with its own random key and keeps a changed demo password."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.conftest import ROOT, free_port

DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text()
PLACEHOLDER_VALUES = {
    "DJANGO_SECRET_KEY": "Zq8v3nK1t0R7yW2mB5cX9pL4sD6fG0hJ3kA8eU1iO7rT2wQ5zN4xV9bM6cY0lP3j",
}


def documented_env() -> dict[str, str]:
    block = re.search(r"<!-- production-env.*?-->\n```sh\n(.*?)```", DEPLOYMENT, re.DOTALL)
    assert block, "docs/deployment.md lost its production-env block"
    pairs = dict(line.split("=", 1) for line in block.group(1).splitlines() if line.strip())
    return {k: PLACEHOLDER_VALUES.get(k, v) for k, v in pairs.items()}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKSTREAM_"))}
    base.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_env() -> None:
    env = documented_env()
    assert "DJANGO_DEBUG" not in env  # production is the default
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def python_settings(env: dict[str, str], expression: str) -> str:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        f"django.setup(); from django.conf import settings; print({expression})"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKSTREAM_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_without_debug_cookies_are_secure_and_hsts_is_on() -> None:
    env = {"DJANGO_SECRET_KEY": PLACEHOLDER_VALUES["DJANGO_SECRET_KEY"]}
    flags = (
        "settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SECURE_HSTS_SECONDS"
    )
    assert python_settings(env, flags) == "True True 31536000"
    debug = {**env, "DJANGO_DEBUG": "true"}
    assert python_settings(debug, flags) == "False False 0"


def test_a_debug_run_signs_with_its_own_random_key_kept_between_runs(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    env = {"DJANGO_DEBUG": "true", "TASKSTREAM_SECRET_KEY_FILE": str(key_file)}
    first = python_settings(env, "settings.SECRET_KEY, settings.SIMPLE_JWT['SIGNING_KEY']")
    key, signing = first.split()
    assert key == signing and len(key) >= 50
    assert "insecure" not in key and key not in (ROOT / "config" / "settings.py").read_text()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert python_settings(env, "settings.SECRET_KEY") == key  # tokens survive a restart
    other = {**env, "TASKSTREAM_SECRET_KEY_FILE": str(tmp_path / "other")}
    assert python_settings(other, "settings.SECRET_KEY") != key  # not shared by clones


@pytest.mark.django_db
def test_make_run_keeps_a_demo_password_that_was_changed() -> None:
    from realtime.embedded import DEMO_PASSWORD, DEMO_USER, prepare_database

    prepare_database()
    demo = get_user_model().objects.get(username=DEMO_USER)
    assert demo.check_password(DEMO_PASSWORD) and demo.is_superuser
    demo.set_password("changed-by-its-owner-42")
    demo.save()
    prepare_database()
    demo.refresh_from_db()
    assert demo.check_password("changed-by-its-owner-42")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (make services)")
def test_nginx_denies_metrics_and_rate_limits_admin_and_login(tmp_path: Path) -> None:
    from tests.test_acceptance_proxy import start_nginx

    site = (ROOT / "deploy" / "nginx" / "taskstream.conf").read_text()
    admin = re.search(r"location /admin/ \{(.*?)\}", site, re.DOTALL)
    assert admin and "deny all;" in admin.group(1) and "limit_req " in admin.group(1)
    # No node behind it: what nginx itself answers is what is tested.
    proxy = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{free_port()}"])
    try:
        with httpx.Client(verify=proxy.tls, timeout=10) as client:
            assert client.get(f"{proxy.base}/metrics").status_code == 403
            admin_codes = [client.get(f"{proxy.base}/admin/login/").status_code for _ in range(15)]
            login_codes = [
                client.post(f"{proxy.base}/api/v1/auth/token/", json={}).status_code
                for _ in range(15)
            ]
    finally:
        proxy.stop()
    # Burst 10 plus the first: the rest are refused by nginx with 429, before any node.
    assert 429 in admin_codes and admin_codes.count(429) >= 3, admin_codes
    assert 429 in login_codes and login_codes.count(429) >= 3, login_codes


def test_a_consumer_batch_larger_than_a_streams_buffer_is_refused() -> None:
    """One user's events of one batch reach a stream at once: a batch that could overflow
    an empty buffer would close healthy streams, so the settings refuse it by name."""
    env = {
        "DJANGO_SECRET_KEY": PLACEHOLDER_VALUES["DJANGO_SECRET_KEY"],
        "TASKSTREAM_STREAM_QUEUE_SIZE": "500",
        "TASKSTREAM_CONSUMER_BATCH": "501",
    }
    refused = manage(env, "check")
    assert refused.returncode != 0
    assert "TASKSTREAM_CONSUMER_BATCH=501 is over TASKSTREAM_STREAM_QUEUE_SIZE=500" in (
        refused.stderr
    )
    assert manage({**env, "TASKSTREAM_CONSUMER_BATCH": "500"}, "check").returncode == 0


def test_a_consumer_linger_over_a_second_is_refused() -> None:
    """Pacing holds a steady flow's events up to the linger before they are applied: a
    value over a second is a typo (seconds for milliseconds), refused by name."""
    env = {
        "DJANGO_SECRET_KEY": PLACEHOLDER_VALUES["DJANGO_SECRET_KEY"],
        "TASKSTREAM_CONSUMER_LINGER_MS": "5000",
    }
    refused = manage(env, "check")
    assert refused.returncode != 0
    assert "TASKSTREAM_CONSUMER_LINGER_MS=5000 must be at most 1000" in refused.stderr
    assert manage({**env, "TASKSTREAM_CONSUMER_LINGER_MS": "0"}, "check").returncode == 0


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("TASKSTREAM_HISTORY_DAYS", "nan", "is not an integer"),
        ("TASKSTREAM_HISTORY_DAYS", "0", "must be at least 1"),
        # A cutoff a billion days back is before year 1: every prune pass would fail.
        ("TASKSTREAM_HISTORY_DAYS", "1000000000", "must be at most 36500"),
    ],
)
def test_a_setting_out_of_range_stops_the_start(name: str, value: str, problem: str) -> None:
    result = manage({**documented_env(), name: value}, "check")
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name}=" in result.stderr and problem in result.stderr


NUMBERS = re.findall(
    r'env_(int|float)\(\s*"([A-Z_]+)"', (ROOT / "config" / "settings.py").read_text()
)
# Huge, past every range: 1e300 seconds overflows time.sleep and setsockopt, 10**30 Redis
# and librdkafka. Each must stop the start with its name, before any of them sees it.
HUGE = {"int": str(10**30), "float": "1e300"}
CHECK = """
import os, runpy, sys
from django.core.exceptions import ImproperlyConfigured
for name, value in (line.split("=", 1) for line in sys.argv[1:]):
    os.environ[name] = value
    try:
        runpy.run_path("config/settings.py")
        print(name, "accepted")
    except ImproperlyConfigured as exc:
        print(name, "refused:", exc)
    del os.environ[name]
"""


def test_every_number_setting_refuses_a_value_past_its_range() -> None:
    assert len(NUMBERS) >= 30  # the parse found them
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKSTREAM_"))}
    env["DJANGO_SECRET_KEY"] = PLACEHOLDER_VALUES["DJANGO_SECRET_KEY"]
    args = [f"{name}={HUGE[kind]}" for kind, name in NUMBERS]
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for _, name in NUMBERS:
        assert lines.get(name, "").startswith(f"refused: {name}="), (name, lines.get(name))
        assert "must be at most" in lines[name], lines[name]
