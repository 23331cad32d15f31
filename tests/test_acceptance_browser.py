"""AC-03 and AC-07 (../shared/research/feature-anchors.md §4) against the real stack, with
headless Chromium's native EventSource for the browser parts (issue #3).

The browser talks to the server through ``tests.browser.WireProxy``, which forwards bytes
unchanged and records each request and response head: that log is what the server really
received (the reconnect's ``Last-Event-ID``, the cookie) and answered (status, CORS)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from confluent_kafka import Producer
from django.contrib.auth.models import User
from rest_framework_simplejwt.tokens import AccessToken

from streaming import conf
from streaming.kafka import producer_config
from tasks.models import AsyncTask
from tests.browser import (
    WireProxy,
    chromium,
    drop,
    install_harness,
    open_source,
    own_server,
    page_server,
    page_state,
    set_cookie,
    wait_js,
)
from tests.conftest import Stack, access_token
from tests.fakes import event_value
from tests.kafka_helpers import produce
from tests.sse import SSEEvent, StreamReader

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

STREAM = "/api/v1/events/stream"
SHORT_STREAMS = {"TASKSTREAM_STREAM_MAX_SECONDS": "2", "TASKSTREAM_RETRY_MS": "500"}


# --- helpers ----------------------------------------------------------------------------


def produce_seq(user: User, task: AsyncTask, seqs: range) -> None:
    """Records for ``user`` whose ``data.message`` is their sequence number."""
    values = [
        event_value(
            user_id=user.pk, task_id=str(task.id), data={"progress": n % 101, "message": str(n)}
        )
        for n in seqs
    ]
    produce(conf.get().TOPIC_EVENTS, [(str(user.pk), v) for v in values])


def seq_of(event: SSEEvent) -> int:
    return int(json.loads(event.data)["data"]["message"])


def offset_of(cursor: str) -> int:
    """The offset in a one-partition cursor ``topic:partition:offset@epoch``."""
    assert "," not in cursor, cursor
    return int(cursor.split("@")[0].rsplit(":", 1)[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed_ids(stack: Stack, user: User, task: AsyncTask, seqs: range) -> dict[int, str]:
    """Produce ``seqs`` and learn each event's id from a plain HTTP stream on the shared
    server (ids are store positions: every server process gives the same ones)."""
    reader = StreamReader(f"{stack.base}{STREAM}", bearer(access_token(user))).start()
    try:
        reader.wait_for(lambda r: any(e.event == "stream-open" for e in r.events), 15)
        produce_seq(user, task, seqs)
        reader.wait_for(lambda r: len(r.of_type("task.")) >= len(seqs), 30)
        events = reader.of_type("task.")
        assert [seq_of(e) for e in events] == list(seqs)
        return {seq_of(e): str(e.id) for e in events}
    finally:
        drop(reader)


def at_least(count: int) -> Callable[[StreamReader], bool]:
    return lambda reader: len(reader.of_type("task.")) >= count


def short_token(user: User, seconds: int) -> tuple[str, int]:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=seconds))
    return str(token), int(token["exp"])


def browser_seqs(state: dict[str, Any], source: int | None = None) -> list[int]:
    return [
        e["seq"]
        for e in state["events"]
        if e["seq"] is not None and (source is None or e["source"] == source)
    ]


@pytest.fixture
def task(alice: User) -> AsyncTask:
    return AsyncTask.objects.create(owner=alice, kind="demo")


@pytest.fixture
def short_server(stack: Stack, tmp_path: Path) -> Iterator[WireProxy]:
    """Our own server whose streams end after ≤ 2 s with `retry: 500`, behind a proxy."""
    with own_server(stack.env, tmp_path, "server_short_streams", **SHORT_STREAMS) as (_, base):
        proxy = WireProxy(int(urlsplit(base).port or 0))
        yield proxy
        proxy.close()


# --- AC-03 ------------------------------------------------------------------------------


def test_ac03_browser_first_load_cursor_then_native_reconnect_sends_last_event_id(
    stack: Stack, alice: User, task: AsyncTask, short_server: WireProxy
) -> None:
    proxy = short_server
    ids = seed_ids(stack, alice, task, range(1, 21))
    with chromium() as driver:
        driver.get(f"{proxy.base}/healthz")  # a page on the app's origin
        install_harness(driver)
        assert set_cookie(driver, "", access_token(alice))["status"] == 200
        open_source(driver, f"{STREAM}?last_event_id={quote(ids[10])}")
        # The query cursor: 11..20 are replayed first.
        wait_js(driver, "ts.events.filter((e) => e.seq !== null).length >= 10", 15, "11..20")
        produce_seq(alice, task, range(21, 31))
        wait_js(driver, "ts.errors.length >= 1", 15, "the server to end the first stream")
        produce_seq(alice, task, range(31, 41))
        wait_js(driver, "ts.events.filter((e) => e.seq !== null).length >= 30", 20, "21..40")
        # One more full stream after the last event: a replay that repeated anything (e.g. a
        # reconnect served from the stale query cursor) would have arrived by its end.
        opens = len(page_state(driver)["opens"])
        wait_js(driver, f"ts.opens.length > {opens} && ts.errors.length > {opens}", 10, "a cycle")
        state = page_state(driver)

    seqs = browser_seqs(state)
    assert seqs == list(range(11, 41))  # no gap, no duplicate, in order, across reconnects
    event_ids = [e["id"] for e in state["events"] if e["seq"] is not None]
    assert event_ids[:10] == [ids[n] for n in range(11, 21)]
    offsets = [offset_of(i) for i in event_ids]
    assert offsets == sorted(set(offsets))

    errors = state["errors"]
    assert {e["state"] for e in errors} == {0}  # CONNECTING each time: never given up
    requests = proxy.requests(STREAM)
    assert len(requests) >= 2 and len(requests) >= len(errors)
    assert all(r.status == 200 for r in requests)
    first, reconnects = requests[0], requests[1 : len(errors) + 1]
    assert "last-event-id" not in first.headers
    # Every automatic reconnect carries the last id the page saw, and still the page's
    # (now stale) query: the header won, or 11.. would have come again.
    assert [r.headers.get("last-event-id") for r in reconnects] == [
        e["lastId"] for e in errors[: len(reconnects)]
    ]
    assert all(r.target == first.target for r in reconnects)
    assert all(
        r.response_headers["taskstream-resumed-from"] == r.headers["last-event-id"]
        for r in reconnects
    )
    # Reconnect delay: the error (stream ended) to the next onopen, in the page; and on the
    # wire, the end of one response to the next request.
    page_delays = [
        (state["opens"][i + 1]["t"] - errors[i]["t"]) / 1000 for i in range(len(state["opens"]) - 1)
    ]
    wire_delays = [b.sent_at - a.ended_at for a, b in pairwise(requests) if a.ended_at is not None]
    assert page_delays and max(page_delays) <= 1.5, page_delays
    assert wire_delays and max(wire_delays) <= 1.5, wire_delays
    print(
        f"\nAC-03c: {len(requests)} stream requests, {len(errors)} ends, "
        f"reconnect (page, error→open) s: {[round(d, 3) for d in page_delays]}, "
        f"(wire, response end→request) s: {[round(d, 3) for d in wire_delays]}, "
        f"Last-Event-ID sent: {[r.headers.get('last-event-id') for r in reconnects]}, "
        f"query: {first.target}, events: {len(seqs)} ({seqs[0]}..{seqs[-1]})"
    )


def test_ac03_last_event_id_header_takes_precedence_over_http(
    stack: Stack, alice: User, task: AsyncTask
) -> None:
    ids = seed_ids(stack, alice, task, range(1, 31))
    token = access_token(alice)
    url = f"{stack.base}{STREAM}?last_event_id={quote(ids[10])}"
    cases = {
        "header and query": (url, {**bearer(token), "Last-Event-ID": ids[20]}, 21, ids[20]),
        "query only": (url, bearer(token), 11, ids[10]),
        "header only": (
            f"{stack.base}{STREAM}",
            {**bearer(token), "Last-Event-ID": ids[20]},
            21,
            ids[20],
        ),
    }
    for name, (target, headers, first, resumed_from) in cases.items():
        reader = StreamReader(target, headers).start()
        try:
            reader.wait_for(at_least(31 - first), 15)
            assert reader.status == 200, name
            assert reader.response_headers is not None
            assert reader.response_headers["taskstream-resumed-from"] == resumed_from, name
            events = reader.of_type("task.")
            assert [seq_of(e) for e in events] == list(range(first, 31)), name
            assert [e.id for e in events] == [ids[n] for n in range(first, 31)], name
            assert not reader.of_type("stream-reset"), name
        finally:
            drop(reader)


def test_ac03_cross_origin_event_source_with_credentials_and_preflight(
    stack: Stack, alice: User, task: AsyncTask, tmp_path: Path
) -> None:
    ids = seed_ids(stack, alice, task, range(1, 11))
    with page_server() as page_port:
        same_site = f"http://127.0.0.1:{page_port}"  # another origin, same site
        cross_site = f"http://localhost:{page_port}"  # another origin and another site
        settings = {**SHORT_STREAMS, "TASKSTREAM_CORS_ALLOWED_ORIGINS": f"{same_site},{cross_site}"}
        with own_server(stack.env, tmp_path, "server_cors", **settings) as (_, base):
            proxy = WireProxy(int(urlsplit(base).port or 0))
            app = proxy.base
            try:
                # The preflight a browser may send before a reconnect with Last-Event-ID.
                preflight = httpx.options(
                    f"{app}{STREAM}",
                    headers={
                        "Origin": same_site,
                        "Access-Control-Request-Method": "GET",
                        "Access-Control-Request-Headers": "last-event-id",
                    },
                )
                assert 200 <= preflight.status_code < 300
                assert preflight.headers["access-control-allow-origin"] == same_site
                assert preflight.headers["access-control-allow-credentials"] == "true"
                allowed = preflight.headers["access-control-allow-headers"].lower()
                assert "last-event-id" in [h.strip() for h in allowed.split(",")]
                assert "GET" in preflight.headers["access-control-allow-methods"]
                stranger = httpx.options(
                    f"{app}{STREAM}",
                    headers={
                        "Origin": "http://evil.example",
                        "Access-Control-Request-Method": "GET",
                    },
                )
                assert "access-control-allow-origin" not in stranger.headers

                checked = len(proxy.exchanges)  # what follows is the browser's
                with chromium() as driver:
                    driver.get(f"{same_site}/")
                    install_harness(driver)
                    cookie = set_cookie(driver, app, access_token(alice), "include")
                    assert cookie["status"] == 200, cookie
                    open_source(driver, f"{app}{STREAM}?last_event_id={quote(ids[5])}")
                    wait_js(
                        driver, "ts.events.filter((e) => e.seq !== null).length >= 5", 15, "6..10"
                    )
                    wait_js(driver, "ts.errors.length >= 1", 15, "the first stream to end")
                    produce_seq(alice, task, range(11, 21))
                    wait_js(
                        driver, "ts.events.filter((e) => e.seq !== null).length >= 15", 20, "..20"
                    )
                    wait_js(driver, "ts.opens.length >= 2", 10, "a cross-origin reconnect")
                    same_site_state = page_state(driver)
                    same_site_log = proxy.exchanges[checked:]

                    # Cross-site: the page's fetch may set no SameSite=Strict cookie, and the
                    # 127.0.0.1 cookie is not sent from localhost: 401, never a stream.
                    driver.get(f"{cross_site}/")
                    install_harness(driver)
                    cross_cookie = set_cookie(driver, app, access_token(alice), "include")
                    before = len(proxy.requests(STREAM))
                    open_source(driver, f"{app}{STREAM}?last_event_id={quote(ids[5])}")
                    wait_js(driver, "ts.errors.some((e) => e.state === 2)", 15, "a refusal")
                    cross_site_state = page_state(driver)
                    cross_site_requests = proxy.requests(STREAM)[before:]
            finally:
                proxy.close()

    assert browser_seqs(same_site_state) == list(range(6, 21))
    streams = [e for e in same_site_log if e.path == STREAM and e.method == "GET"]
    assert len(streams) >= 2
    assert streams[1].headers.get("last-event-id")  # a reconnect, cross-origin
    for exchange in streams:
        assert exchange.headers["origin"] == same_site
        assert "taskstream_access=" in exchange.headers.get("cookie", "")  # sent same-site
        assert exchange.status == 200
        assert exchange.response_headers["access-control-allow-origin"] == same_site
        assert exchange.response_headers["access-control-allow-credentials"] == "true"
    preflights = [e for e in same_site_log if e.method == "OPTIONS"]
    assert all(e.status == 204 for e in preflights), [
        (e.method, e.target, e.headers, e.status, e.response_headers) for e in preflights
    ]

    assert cross_site_state["opens"] == []
    assert cross_site_requests and all(e.status == 401 for e in cross_site_requests)
    assert all("taskstream_access=" not in e.headers.get("cookie", "") for e in cross_site_requests)
    asked = [(e.path, e.headers.get("access-control-request-headers")) for e in preflights]
    print(
        f"\nAC-03d: cookie POST from {same_site}: {cookie['status']}; "
        f"stream ACAO={streams[0].response_headers['access-control-allow-origin']} "
        f"ACAC={streams[0].response_headers['access-control-allow-credentials']}; "
        f"preflights seen from Chromium: {asked}; "
        f"reconnect Last-Event-ID: {streams[1].headers.get('last-event-id')}; "
        f"cross-site ({cross_site}) cookie POST {cross_cookie['status']}, stream statuses "
        f"{[e.status for e in cross_site_requests]}, cookie sent: "
        f"{['cookie' in e.headers for e in cross_site_requests]}"
    )


# --- AC-07 ------------------------------------------------------------------------------


class Trickle:
    """Produces one numbered record every ~50 ms in a thread, noting when each was sent."""

    def __init__(self, user: User, task: AsyncTask, until: float) -> None:
        self.user, self.task, self.until = user, task, until
        self.sent: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(producer_config())
        topic, n = conf.get().TOPIC_EVENTS, 0
        while time.time() < self.until and not self.stop.is_set():
            n += 1
            value = event_value(
                user_id=self.user.pk,
                task_id=str(self.task.id),
                data={"progress": 1, "message": str(n)},
            )
            self.sent[n] = time.time()
            producer.produce(topic, key=str(self.user.pk), value=json.dumps(value))
            assert producer.flush(10) == 0
            self.stop.wait(0.05)  # pacing of the producer, not synchronisation


def test_ac07_token_expiry_ends_the_stream_then_401_then_fresh_token_resumes(
    stack: Stack, alice: User, task: AsyncTask
) -> None:
    token, exp = short_token(alice, 4)
    heartbeat = conf.get().HEARTBEAT_SECONDS
    reader = StreamReader(f"{stack.base}{STREAM}", bearer(token)).start()
    trickle = Trickle(alice, task, until=exp + 1.5)
    try:
        reader.wait_for(lambda r: any(e.event == "stream-open" for e in r.events), 15)
        trickle.thread.start()
        reader.wait_for(lambda r: r.ended, exp + heartbeat + 1 - time.time())
        ended_at = time.time()
        trickle.thread.join(15)
    finally:
        trickle.stop.set()
        drop(reader)

    assert reader.status == 200
    assert reader.error is None  # a clean end of the chunked response, not a reset
    assert ended_at <= exp + heartbeat + 1
    delivered = [seq_of(e) for e in reader.of_type("task.")]
    after_exp = [n for n, t in trickle.sent.items() if t >= exp]
    assert delivered and after_exp
    assert delivered == list(range(1, len(delivered) + 1))  # a gapless prefix
    assert all(trickle.sent[n] < exp for n in delivered)  # nothing produced after exp
    last_id = reader.of_type("task.")[-1].id
    assert last_id is not None

    expired = StreamReader(
        f"{stack.base}{STREAM}", {**bearer(token), "Last-Event-ID": last_id}
    ).start()
    expired.wait_for(lambda r: r.ended, 15)
    assert expired.status == 401
    assert expired.response_headers is not None
    www = expired.response_headers["www-authenticate"]
    assert www.startswith("Bearer ") and 'error="invalid_token"' in www
    assert expired.response_headers["content-type"] == "application/json"
    assert json.loads(expired.body)["code"] == "token_not_valid"
    assert expired.events == []

    total = max(trickle.sent)
    fresh = StreamReader(
        f"{stack.base}{STREAM}", {**bearer(access_token(alice)), "Last-Event-ID": last_id}
    ).start()
    try:
        fresh.wait_for(lambda r: any(seq_of(e) == total for e in r.of_type("task.")), 15)
        resumed = [seq_of(e) for e in fresh.of_type("task.")]
    finally:
        drop(fresh)
    assert resumed == list(range(len(delivered) + 1, total + 1))
    print(
        f"\nAC-07: exp={exp}, stream ended {ended_at - exp:+.3f} s after exp (H={heartbeat}), "
        f"delivered 1..{len(delivered)} (last sent {exp - trickle.sent[len(delivered)]:.3f} s "
        f"before exp), {len(after_exp)} produced after exp, none delivered; expired reconnect "
        f"401 {www!r}; fresh reconnect resumed {resumed[0]}..{resumed[-1]}"
    )


def test_ac07_browser_cookie_expiry_is_refused_never_anonymous_then_resumes(
    stack: Stack, alice: User, task: AsyncTask, tmp_path: Path
) -> None:
    cookie_name = conf.get().AUTH_COOKIE
    heartbeat = conf.get().HEARTBEAT_SECONDS
    with own_server(stack.env, tmp_path, "server_retry", TASKSTREAM_RETRY_MS="500") as (_, base):
        proxy = WireProxy(int(urlsplit(base).port or 0))
        try:
            with chromium() as driver:
                driver.get(f"{proxy.base}/healthz")
                install_harness(driver)
                token, exp = short_token(alice, 5)
                answer = set_cookie(driver, "", token)
                assert answer["status"] == 200, answer
                open_source(driver, STREAM)  # source 0
                wait_js(driver, "ts.opens.length === 1 && ts.events.length >= 1", 15, "open")
                produce_seq(alice, task, range(1, 6))
                wait_js(driver, "ts.events.filter((e) => e.seq !== null).length >= 5", 15, "1..5")
                # The token expires: the stream ends, the reconnect is refused, EventSource
                # gives up (CLOSED) instead of streaming anonymously.
                wait_js(
                    driver,
                    "ts.errors.some((e) => e.source === 0 && e.state === 2)",
                    exp + heartbeat + 10 - time.time(),
                    "the expired cookie's reconnect to be refused",
                )
                produce_seq(alice, task, range(6, 11))  # while the page has no stream
                expired_state = page_state(driver)
                expired_requests = proxy.requests(STREAM)

                # A browser that still sends the expired token (e.g. clock skew): refused too.
                driver.add_cookie(
                    {
                        "name": cookie_name,
                        "value": token,
                        "path": "/api/v1/events/",
                        "httpOnly": True,
                    }
                )
                open_source(driver, STREAM)  # source 1
                wait_js(driver, "ts.errors.some((e) => e.source === 1 && e.state === 2)", 15, "401")
                stale_request = proxy.requests(STREAM)[-1]

                # The page re-sets the cookie with a fresh token and re-opens from its last id.
                last_id = expired_state["errors"][-1]["lastId"]
                assert set_cookie(driver, "", access_token(alice))["status"] == 200
                open_source(driver, f"{STREAM}?last_event_id={quote(last_id)}")  # source 2
                wait_js(
                    driver,
                    "ts.events.filter((e) => e.source === 2 && e.seq !== null).length >= 5",
                    15,
                    "6..10",
                )
                produce_seq(alice, task, range(11, 16))
                wait_js(
                    driver, "ts.events.filter((e) => e.seq !== null).length >= 15", 15, "11..15"
                )
                final_state = page_state(driver)
        finally:
            proxy.close()

    assert browser_seqs(expired_state, 0) == [1, 2, 3, 4, 5]
    assert [e["state"] for e in expired_state["errors"]] == [0, 2]  # ended, then refused
    assert [o["source"] for o in final_state["opens"]] == [0, 2]  # no open while expired
    first, *refused = expired_requests
    assert first.status == 200
    assert refused and all(r.status == 401 for r in refused)
    assert all(r.sent_at >= exp - 1 for r in refused)
    assert all(r.response_headers["content-type"] == "application/json" for r in refused)
    ended = first.ended_at
    assert ended is not None and ended <= exp + heartbeat + 1
    assert stale_request.status == 401
    assert f"{cookie_name}=" in stale_request.headers.get("cookie", "")
    assert 'error="invalid_token"' in stale_request.response_headers["www-authenticate"]
    assert browser_seqs(final_state) == list(range(1, 16))
    assert browser_seqs(final_state, 2) == list(range(6, 16))
    refusals = [
        (r.status, "cookie" in r.headers, r.response_headers.get("www-authenticate"))
        for r in refused
    ]
    stale_www = stale_request.response_headers.get("www-authenticate")
    print(
        f"\nAC-07 browser: stream ended {ended - exp:+.3f} s after exp; reconnect(s) after "
        f"expiry (status, cookie sent, WWW-Authenticate): {refusals}; "
        f"stale cookie: {stale_request.status} {stale_www}; "
        f"page states on error: {[e['state'] for e in final_state['errors']]}; "
        f"resumed from {last_id}: {browser_seqs(final_state, 2)}"
    )
