"""OpenTelemetry as an optional extra (#13, item 2). Off (the default install), nothing of it
is imported and a span costs nothing; on (requirements-otel.txt installed), a batch's
spans continue its records' traces and a stream open has its span. The "on" tests need the
packages (`make test` installs them) and skip without them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from streaming import tracing
from tasks.models import AsyncTask
from tests.conftest import ROOT
from tests.fakes import FakeConsumer, FakeProducer, event_value, record
from tests.test_consumer_loop import close_thread_connections, make_loop

__all__ = ["close_thread_connections"]

TRACE_A = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_B = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is not there either
        return False


HAVE_OTEL = _importable("opentelemetry.sdk")


def test_off_it_imports_nothing_and_reads_no_record() -> None:
    code = """
import sys
from streaming import tracing

def untouchable():
    raise AssertionError("the records' headers were read with tracing off")
    yield

assert tracing.setup("svc", "") is False
assert not tracing.enabled()
with tracing.span("consume_events batch", untouchable(), records=3) as span:
    assert span is None
assert tracing.span("a") is tracing.span("b")  # one shared no-op
assert not any(m.startswith("opentelemetry") for m in sys.modules), sorted(sys.modules)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_an_endpoint_without_the_packages_warns_and_stays_off() -> None:
    # In a process where the packages cannot be imported, whether or not they are installed.
    code = """
import logging
import sys

sys.modules["opentelemetry"] = None  # every import of it fails, as when not installed
said = []
handler = logging.Handler()
handler.emit = lambda record: said.append(record.getMessage())
logging.getLogger("streaming.tracing").addHandler(handler)
from streaming import tracing

assert tracing.setup("svc", "http://127.0.0.1:4318") is False
assert not tracing.enabled()
assert any("requirements-otel.txt" in line for line in said), said
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.fixture
def spans() -> Iterator[Any]:
    if not HAVE_OTEL:
        pytest.skip("OpenTelemetry is not installed (pip install -r requirements-otel.txt)")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider.get_tracer("tests"))
    try:
        yield exporter
    finally:
        tracing.use(None)


def _hex(number: int, width: int) -> str:
    return f"{number:0{width}x}"


@pytest.mark.django_db(transaction=True)
async def test_a_batch_of_one_trace_continues_it_through_apply_and_push(
    alice: User, spans: Any
) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    records = []
    for offset in (5, 6):
        value = event_value(user_id=alice.pk, task_id=str(task.id), event_id=str(uuid.uuid4()))
        records.append(record(value, offset=offset))
        records[-1]._headers = [("traceparent", TRACE_A.encode())]
    await make_loop(FakeConsumer(batches=[records]), FakeProducer()).run_once()
    by_name = {s.name: s for s in spans.get_finished_spans()}
    batch, apply, push = (by_name[n] for n in ("consume_events batch", "apply", "push"))
    assert _hex(batch.context.trace_id, 32) == TRACE_A[3:35]
    assert _hex(batch.parent.span_id, 16) == TRACE_A[36:52]  # the producer's span
    assert apply.parent.span_id == push.parent.span_id == batch.context.span_id
    assert batch.attributes["records"] == 2 and push.attributes["events"] == 2


@pytest.mark.django_db(transaction=True)
async def test_a_batch_of_several_traces_links_to_each(alice: User, spans: Any) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    records = []
    for offset, trace in ((7, TRACE_A), (8, TRACE_B), (9, "00-malformed")):
        value = event_value(user_id=alice.pk, task_id=str(task.id), event_id=str(uuid.uuid4()))
        records.append(record(value, offset=offset))
        records[-1]._headers = [("traceparent", trace.encode())]
    await make_loop(FakeConsumer(batches=[records]), FakeProducer()).run_once()
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "consume_events batch"]
    assert batch.parent is None
    linked = {_hex(link.context.trace_id, 32) for link in batch.links}
    assert linked == {TRACE_A[3:35], TRACE_B[3:35]}


async def test_a_stream_open_has_its_span(spans: Any, settings: Any) -> None:
    from realtime.store import reset_memory_store
    from tests.test_stream import ALICE, Stream, bearer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.TASKSTREAM = {**settings.TASKSTREAM, "REDIS_URL": "", "TOPIC_EVENTS": "task.events"}
    reset_memory_store()
    stream = Stream(bearer(ALICE))
    assert (await stream.open())["status"] == 200
    await stream.disconnect()
    (opened,) = [s for s in spans.get_finished_spans() if s.name == "stream open"]
    assert opened.attributes["user_id"] == ALICE


def test_setup_exports_spans_over_otlp_to_the_configured_endpoint() -> None:
    """The whole optional path: a process with the endpoint set sends its spans to it
    (a stand-in collector here, taking OTLP/HTTP posts)."""
    if not HAVE_OTEL:
        pytest.skip("OpenTelemetry is not installed (pip install -r requirements-otel.txt)")
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    code = f"""
from streaming import tracing
assert tracing.setup("taskstream-probe", {endpoint!r})
with tracing.span("probe span", [{TRACE_A!r}], records=1):
    pass
"""  # the provider flushes its batch at exit
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]
    assert b"taskstream-probe" in body and b"probe span" in body
    assert bytes.fromhex(TRACE_A[3:35]) in body  # the span continues the record's trace
