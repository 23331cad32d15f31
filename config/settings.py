"""Taskstream settings: every value comes from the environment, here and only here.

Each helper below raises ImproperlyConfigured on a value it cannot parse, so a typo in a
deployment fails at start-up instead of running with a silent default. The app's own knobs
live in one namespaced dict, ``TASKSTREAM``, read through ``streaming.conf``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from config import logs
from realtime.redis_retry import CONNECT_TIMEOUT, SOCKET_TIMEOUT, redis_retry

BASE_DIR = Path(__file__).resolve().parent.parent

# Lets annotations such as `admin.ModelAdmin[AsyncTask]` run, not only type-check.
django_stubs_ext.monkeypatch()


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


N = TypeVar("N", int, float)


def _env_number(
    name: str, default: N, kind: type[N], minimum: N | None, maximum: N | None = None
) -> N:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ImproperlyConfigured(f"{name}={raw!r} is not {what}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}")
    return value


# Every number has a range (tests/test_production_settings.py holds each setting to one): a
# value past what a library or server takes (Redis's expiry and stream length, librdkafka's
# batch, time.sleep, setsockopt) fails at start, naming it, not at every call at run time.
def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    return _env_number(name, default, int, minimum, maximum)


def env_float(
    name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
) -> float:
    return _env_number(name, default, float, minimum, maximum)


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate: ``<count>/<s|min|hour|day>``."""
    raw = env_str(name, default).strip()
    count, _, period = raw.partition("/")
    if not count.isdigit() or period[:1] not in {"s", "m", "h", "d"}:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate such as 10/min")
    return raw


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env_str(name, default).strip()
    value = raw.upper() if choices[0].isupper() else raw.lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_instance_id(name: str) -> str:
    raw = env_str(name).strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", raw):
        raise ImproperlyConfigured(f"{name}={raw!r}: use letters, digits, '.', '_', '-'")
    return raw


def env_networks(name: str, default: str) -> tuple[str, ...]:
    """Comma-separated IP networks (``10.0.0.0/8``) or addresses."""
    items = env_list(name, default)
    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in items)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set (set it, or DJANGO_DEBUG=true for a local run)"
        )
    # A local run signs sessions and JWTs with a random key made on first use and kept
    # (0600) beside the embedded database, never with a constant from the repository.
    _key_file = Path(env_str("TASKSTREAM_SECRET_KEY_FILE", str(BASE_DIR / ".data" / "secret_key")))
    if not _key_file.exists():
        _key_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first
            fd = os.open(_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as key_out:
                key_out.write(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured(f"{_key_file} holds no usable key: delete it to make one")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "tasks",
    "realtime",
]

MIDDLEWARE = [
    # First: its line times the whole request and sees the status every other one set.
    "realtime.requestlog.AccessLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# --- HTTPS: on by default without DEBUG (docs/deployment.md, "Production settings") ----
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int(
    "DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0, maximum=2 * 365 * 86400
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# nginx redirects plain HTTP itself; this also redirects anything that reaches a node over
# plain HTTP, except what is scraped or probed there directly.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# `serve --proxy-headers` already takes the scheme from the proxy's X-Forwarded-Proto;
# this is for a server that does not (only behind a proxy that always sets the header).
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: DATABASE_URL, or SQLite for the embedded default -------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        _db: dict[str, Any] = dict(dj_database_url.parse(DATABASE_URL, conn_max_age=60))
    except Exception as exc:  # dj_database_url raises several unrelated types
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
else:
    _sqlite_path = Path(env_str("TASKSTREAM_SQLITE_PATH", str(BASE_DIR / ".data" / "db.sqlite3")))
    _sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_sqlite_path),
        # The embedded mode writes from several threads (worker, relay, consumer); WAL and
        # IMMEDIATE transactions turn "database is locked" errors into short waits.
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache; without it, in-process equivalents ----------------
REDIS_URL = env_str("REDIS_URL")
# Every Redis key Taskstream writes starts with this: several deployments (or test runs)
# can share one Redis.
REDIS_PREFIX = env_str("TASKSTREAM_REDIS_PREFIX", "ts")
if env_int("TASKSTREAM_DRAIN_REFUSAL_STATUS", 200, maximum=599) not in (200, 503):
    raise ImproperlyConfigured("TASKSTREAM_DRAIN_REFUSAL_STATUS must be 200 or 503")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://")
    CHANNEL_LAYERS: dict[str, Any] = {
        "default": {
            "BACKEND": "realtime.layer.RedisChannelLayer",
            "CONFIG": {
                # One layer channel per server process (see realtime/hub.py), so capacity is
                # per process, not per browser: size it for bursts. Overflow is detected by
                # position gaps, never trusted to be absent.
                # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s that
                # channels-redis blocks in BZPOPMIN: an idle receive then fails with
                # "Timeout reading" at random. The socket must outlive the blocking pop.
                # A command on a connection a Redis restart killed is retried on a new one
                # (realtime/redis_retry.py) instead of failing the stream open.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": 1000,
                        "socket_timeout": SOCKET_TIMEOUT,
                        "socket_connect_timeout": CONNECT_TIMEOUT,
                        "retry": redis_retry(),
                    }
                ],
                "capacity": env_int(
                    "TASKSTREAM_LAYER_CAPACITY", 10000, minimum=100, maximum=1_000_000
                ),
                "expiry": 60,
                "prefix": f"{REDIS_PREFIX}:asgi",
                # A server process leaves its groups when it stops (realtime/hub.py); one
                # that crashed stays a member, and every batch is copied into its channel,
                # until its membership lapses after this many seconds. Live hubs re-join
                # every quarter of it.
                "group_expiry": env_int(
                    "TASKSTREAM_LAYER_GROUP_EXPIRY", 120, minimum=20, maximum=86400
                ),
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # The API's throttles read the cache: a frozen Redis fails a request after
            # these timeouts instead of holding it (and a node told to stop) for ever.
            "OPTIONS": {
                "socket_timeout": SOCKET_TIMEOUT,
                "socket_connect_timeout": CONNECT_TIMEOUT,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"

# --- API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks.authentication.LoggedJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "tasks.parsers.ParseBody",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Strict JSON only (streaming.jsonsafe); every view parses its body after authentication,
    # so a body the API cannot carry is a 400 on every endpoint (tasks/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["tasks.parsers.StrictJSONParser"],
    # Stream opens are limited separately, in the stream (TASKSTREAM_STREAM_OPENS_PER_MINUTE).
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("TASKSTREAM_API_RATE_ANON", "60/min"),
        "user": env_rate("TASKSTREAM_API_RATE_USER", "600/min"),
        # Password attempts per username, from any address (realtime/views.py, TokenView).
        "login": env_rate("TASKSTREAM_LOGIN_RATE", "10/min"),
    },
    # Which address the anonymous throttle counts: 0 (the default) is the connection's
    # peer as the server reports it; behind nginx, `serve --proxy-headers` already makes
    # that the client's address from the proxy's X-Forwarded-For. N > 0 takes the N-th
    # address from the right of X-Forwarded-For (N proxies that each append). Unset,
    # DRF would key on the whole header, which the client writes: one guess per value.
    "NUM_PROXIES": env_int("TASKSTREAM_NUM_PROXIES", 0, minimum=0, maximum=100),
    "EXCEPTION_HANDLER": "tasks.views.json_exception_handler",
}

# The largest task `params`, as compact UTF-8 JSON. The outbox relay sends it ASCII-escaped
# (up to 3x: "é" is 2 bytes, "\u00e9" 6), and the request must still fit in one Kafka
# record (message.max.bytes, 1,000,000 by default): hence at most 256 KiB.
TASKS_PARAMS_MAX_BYTES = env_int(
    "TASKSTREAM_PARAMS_MAX_BYTES", 64 * 1024, minimum=2, maximum=256 * 1024
)

# --- Task kinds run by Celery or RQ instead of the demo worker (docs/workers.md) ----------
# TASKSTREAM_TASK_ROUTES="report=celery:myapp.tasks.report,export=rq:myapp.jobs.export":
# the outbox relay hands a task of kind `report` to Celery (task name) and `export` to RQ
# (function path), after the API's transaction commits; other kinds go to task.requests.
_ROUTE = re.compile(r"^([a-z][a-z0-9_.-]{0,63})=(celery|rq):([A-Za-z_][A-Za-z0-9_.-]{0,200})$")


def env_task_routes(name: str) -> dict[str, str]:
    routes: dict[str, str] = {}
    for item in env_list(name):
        match = _ROUTE.match(item)
        if match is None:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not KIND=celery:TASK_NAME or KIND=rq:MODULE.FUNCTION"
            )
        kind, system, target = match.groups()
        if kind in routes:
            raise ImproperlyConfigured(f"{name}: kind {kind!r} is routed twice")
        routes[kind] = f"{system}:{target}"
    return routes


TASKSTREAM_TASK_ROUTES = env_task_routes("TASKSTREAM_TASK_ROUTES")
TASKSTREAM_CELERY_BROKER_URL = env_str("TASKSTREAM_CELERY_BROKER_URL")
TASKSTREAM_CELERY_QUEUE = env_str("TASKSTREAM_CELERY_QUEUE", "celery")
TASKSTREAM_RQ_REDIS_URL = env_str("TASKSTREAM_RQ_REDIS_URL")
TASKSTREAM_RQ_QUEUE = env_str("TASKSTREAM_RQ_QUEUE", "default")
for _system, _needed in (
    ("celery", "TASKSTREAM_CELERY_BROKER_URL"),
    ("rq", "TASKSTREAM_RQ_REDIS_URL"),
):
    _kinds = [k for k, r in TASKSTREAM_TASK_ROUTES.items() if r.startswith(f"{_system}:")]
    if _kinds and not globals()[_needed]:
        raise ImproperlyConfigured(
            f"TASKSTREAM_TASK_ROUTES sends {', '.join(_kinds)} to {_system}, "
            f"but {_needed} is not set"
        )

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(
        seconds=env_int("JWT_ACCESS_SECONDS", 300, minimum=5, maximum=86400)
    ),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        seconds=env_int("JWT_REFRESH_SECONDS", 86400, minimum=60, maximum=365 * 86400)
    ),
    "SIGNING_KEY": env_str("JWT_SIGNING_KEY") or SECRET_KEY,
}

# --- Taskstream's own knobs ------------------------------------------------------------
TASKSTREAM: dict[str, Any] = {
    # Empty means "not configured": commands that need Kafka refuse to start, except the
    # embedded `run_embedded`, which starts librdkafka's mock cluster and sets it here.
    "KAFKA_BOOTSTRAP_SERVERS": env_str("KAFKA_BOOTSTRAP_SERVERS"),
    "TOPIC_EVENTS": env_str("TASKSTREAM_TOPIC_EVENTS", "task.events"),
    "TOPIC_REQUESTS": env_str("TASKSTREAM_TOPIC_REQUESTS", "task.requests"),
    "TOPIC_DLQ": env_str("TASKSTREAM_TOPIC_DLQ", "task.events.dlq"),
    "TOPIC_PARTITIONS": env_int("TASKSTREAM_TOPIC_PARTITIONS", 3, minimum=1, maximum=1000),
    "CONSUMER_GROUP": env_str("TASKSTREAM_CONSUMER_GROUP", "taskstream-events"),
    "WORKER_GROUP": env_str("TASKSTREAM_WORKER_GROUP", "taskstream-worker"),
    # consume_events' static group membership (group.instance.id): a stable id per process
    # (systemd: %H-%i), so a restarted process takes its partitions back at once. Empty:
    # dynamic membership (a crashed process's partitions wait out the session timeout).
    "CONSUMER_INSTANCE_ID": env_instance_id("TASKSTREAM_CONSUMER_INSTANCE_ID"),
    # The same for run_worker (its group is WORKER_GROUP): a restarted worker takes its
    # request partitions back at once, and re-runs the task it was killed in.
    "WORKER_INSTANCE_ID": env_instance_id("TASKSTREAM_WORKER_INSTANCE_ID"),
    # Records per consume_events batch. At most STREAM_QUEUE_SIZE (checked below): one
    # user's events of one batch reach a stream at once and must fit its buffer.
    "CONSUMER_BATCH": env_int("TASKSTREAM_CONSUMER_BATCH", 1000, minimum=1, maximum=100_000),
    # While records keep coming, consume_events starts at most one batch per this many ms
    # (realtime/ingest.py, "pacing"): a batch's fixed costs, and every server's wake per
    # layer message, are then paid once per interval, not once per record. Over a second is
    # a typo (seconds for milliseconds): every event of a steady flow could wait that long.
    "CONSUMER_LINGER_MS": env_int("TASKSTREAM_CONSUMER_LINGER_MS", 50, minimum=0, maximum=1000),
    # How often a running consume_events asks Kafka whether the events topic was re-created
    # (realtime/epoch_watch.py): it then stops, to be started again on the new epoch.
    "EPOCH_CHECK_SECONDS": env_float(
        "TASKSTREAM_EPOCH_CHECK_SECONDS", 5.0, minimum=0.1, maximum=3600.0
    ),
    "HEARTBEAT_SECONDS": env_float(
        "TASKSTREAM_HEARTBEAT_SECONDS", 15.0, minimum=0.05, maximum=3600.0
    ),
    "RETRY_MS": env_int("TASKSTREAM_RETRY_MS", 3000, minimum=0, maximum=3_600_000),
    "STREAM_QUEUE_SIZE": env_int(
        "TASKSTREAM_STREAM_QUEUE_SIZE", 1000, minimum=1, maximum=1_000_000
    ),
    "OUTBOX_POLL_SECONDS": env_float(
        "TASKSTREAM_OUTBOX_POLL_SECONDS", 0.2, minimum=0.01, maximum=60.0
    ),
    "AUTH_COOKIE": env_str("TASKSTREAM_AUTH_COOKIE", "taskstream_access"),
    "AUTH_COOKIE_SECURE": env_bool("TASKSTREAM_AUTH_COOKIE_SECURE", not DEBUG),
    # The hot store (realtime/store.py) lives in the same Redis as the channel layer.
    "REDIS_URL": REDIS_URL,
    "REDIS_PREFIX": REDIS_PREFIX,
    "REPLAY_MAX_EVENTS": env_int(
        "TASKSTREAM_REPLAY_MAX_EVENTS", 1000, minimum=10, maximum=1_000_000
    ),
    # At most ten years: Redis refuses an expiry past its range, and every batch's store
    # write would fail (an outage that never ends).
    "REPLAY_TTL_SECONDS": env_int(
        "TASKSTREAM_REPLAY_TTL_SECONDS", 7 * 86400, minimum=60, maximum=10 * 365 * 86400
    ),
    # How long history stays in PostgreSQL at least (tasks/retention.py: `prune_history`
    # deletes event-log and dead-letter rows older than this once Kafka no longer holds
    # their records, and outbox rows older than this once sent).
    # (At most a century: the cutoff is a date.)
    "HISTORY_DAYS": env_int("TASKSTREAM_HISTORY_DAYS", 30, minimum=1, maximum=36_500),
    "REPLAY_PAGE": env_int("TASKSTREAM_REPLAY_PAGE", 500, minimum=1, maximum=100_000),
    "REPLAY_MAX_SCAN": env_int(
        "TASKSTREAM_REPLAY_MAX_SCAN", 200_000, minimum=0, maximum=100_000_000
    ),
    # Stream opens (and hole fills) per user and minute that may read Kafka; past it the
    # stream starts with a `replay-limit` reset instead of another scan.
    "REPLAY_KAFKA_PER_MINUTE": env_int(
        "TASKSTREAM_REPLAY_KAFKA_PER_MINUTE", 10, minimum=0, maximum=100_000
    ),
    # A task.events record larger than this is dead-lettered (it would be copied into
    # PostgreSQL, Redis and every stream's buffer).
    "MAX_EVENT_BYTES": env_int(
        "TASKSTREAM_MAX_EVENT_BYTES", 262_144, minimum=1024, maximum=16 * 1024 * 1024
    ),
    "MAX_STREAMS_PER_USER": env_int(
        "TASKSTREAM_MAX_STREAMS_PER_USER", 5, minimum=1, maximum=1_000_000
    ),
    "STREAM_OPENS_PER_MINUTE": env_int(
        "TASKSTREAM_STREAM_OPENS_PER_MINUTE", 120, minimum=1, maximum=100_000_000
    ),
    "STREAM_MAX_SECONDS": env_float(
        "TASKSTREAM_STREAM_MAX_SECONDS", 1800.0, minimum=1.0, maximum=86400.0
    ),
    "SEND_TIMEOUT_SECONDS": env_float(
        "TASKSTREAM_SEND_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=3600.0
    ),
    "DRAIN_SECONDS": env_float("TASKSTREAM_DRAIN_SECONDS", 10.0, minimum=0.0, maximum=3600.0),
    "DRAIN_REFUSAL_STATUS": env_int(
        "TASKSTREAM_DRAIN_REFUSAL_STATUS", 200, minimum=200, maximum=599
    ),
    "CORS_ALLOWED_ORIGINS": tuple(env_list("TASKSTREAM_CORS_ALLOWED_ORIGINS")),
    # `serve` closes a connection whose request headers (body) take longer than this.
    "HEADER_TIMEOUT_SECONDS": env_float(
        "TASKSTREAM_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=3600.0
    ),
    "BODY_TIMEOUT_SECONDS": env_float(
        "TASKSTREAM_BODY_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=3600.0
    ),
    # Who may read /metrics: these networks, or a request with `Authorization: Bearer
    # <TASKSTREAM_METRICS_TOKEN>` (when set).
    "METRICS_ALLOW": env_networks("TASKSTREAM_METRICS_ALLOW", "127.0.0.0/8,::1/128"),
    "METRICS_TOKEN": env_str("TASKSTREAM_METRICS_TOKEN"),
    # OpenTelemetry spans (streaming/tracing.py) when set and the optional packages are
    # installed (requirements-otel.txt); the exporter reads the rest of OTEL_* itself.
    "OTEL_ENDPOINT": env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    or env_str("OTEL_EXPORTER_OTLP_ENDPOINT"),
}
if TASKSTREAM["CONSUMER_BATCH"] > TASKSTREAM["STREAM_QUEUE_SIZE"]:
    raise ImproperlyConfigured(
        f"TASKSTREAM_CONSUMER_BATCH={TASKSTREAM['CONSUMER_BATCH']} is over "
        f"TASKSTREAM_STREAM_QUEUE_SIZE={TASKSTREAM['STREAM_QUEUE_SIZE']}: one user's events of "
        "one batch reach a stream at once, and a stream whose buffer they overflow is closed"
    )

# --- Logs: structlog renders every line (config/logs.py, docs/operations.md) -------------
LOG_FORMAT = env_choice("TASKSTREAM_LOG_FORMAT", "console" if DEBUG else "json", logs.FORMATS)
LOGGING = logs.logging_config(
    LOG_FORMAT,
    env_choice("LOG_LEVEL", "INFO", logs.LEVELS),
    records=env_bool("TASKSTREAM_LOG_RECORDS", False),
)
logs.configure_structlog()
