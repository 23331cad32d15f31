"""Prometheus metrics: one counter per outcome. Served at /metrics by the web process;
background commands expose theirs with --metrics-port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STREAMS_OPEN = Gauge("taskstream_streams_open", "SSE streams open in this process")
STREAMS_OPENED = Counter("taskstream_streams_opened_total", "SSE streams accepted")
STREAMS_REJECTED = Counter(
    "taskstream_streams_rejected_total", "SSE stream requests refused", ["reason"]
)
STREAM_FRAMES_SENT = Counter("taskstream_stream_events_sent_total", "Events written to streams")
STREAM_HEARTBEATS = Counter("taskstream_stream_heartbeats_total", "Heartbeats written")
REPLAYS = Counter("taskstream_replays_total", "Replay reads, by where they were served", ["source"])
STREAM_RESETS = Counter("taskstream_stream_resets_total", "stream-reset events sent", ["reason"])
STREAM_GAPS_FILLED = Counter(
    "taskstream_stream_gaps_filled_total", "Holes in a live stream filled from replay"
)
STREAM_DUPLICATES_DROPPED = Counter(
    "taskstream_stream_duplicates_dropped_total",
    "Events not written because the stream had already sent that position",
)
STREAM_OVERFLOWS = Counter(
    "taskstream_stream_overflows_total", "Streams closed because their buffer was full"
)
STREAMS_CLOSED = Counter("taskstream_streams_closed_total", "Streams ended", ["reason"])

CONSUMER_RECORDS = Counter(
    "taskstream_consumer_records_total", "Records handled by consume_events", ["outcome"]
)
CONSUMER_DEAD_LETTERS = Counter(
    "taskstream_consumer_dead_letters_total",
    "Records dead-lettered by consume_events, by reason class (realtime/ingestlog.py)",
    ["reason"],
)
CONSUMER_BATCHES = Counter("taskstream_consumer_batches_total", "Batches committed")
CONSUMER_OUTAGES = Counter(
    "taskstream_consumer_outages_total",
    "Batches rewound and retried because a dependency was unreachable",
    ["error"],
)
CONSUMER_ISOLATED = Counter(
    "taskstream_consumer_isolated_total",
    "Events the database refused, found by bisecting their batch and dead-lettered",
)
CONSUMER_COMMIT_FAILURES = Counter(
    "taskstream_consumer_commit_failures_total", "Offset commits Kafka refused (re-read later)"
)
LAYER_MESSAGES = Counter("taskstream_layer_messages_sent_total", "Channel-layer messages sent")

OUTBOX_SENT = Counter("taskstream_outbox_sent_total", "Outbox rows delivered to Kafka")
OUTBOX_FAILED = Counter("taskstream_outbox_failed_total", "Outbox delivery attempts that failed")
OUTBOX_REFUSED = Counter(
    "taskstream_outbox_refused_total", "Outbox rows Kafka refused for good, marked failed"
)
OUTBOX_FAILURES_REPORTED = Counter(
    "taskstream_outbox_failures_reported_total",
    "task.failed events delivered for the tasks of refused outbox rows",
)

HISTORY_PRUNED = Counter(
    "taskstream_history_pruned_total", "Rows prune_history deleted, by table", ["table"]
)
HISTORY_SKIPPED = Counter(
    "taskstream_history_prune_skipped_total",
    "Topics prune_history kept every row of for a pass: Kafka did not answer for them",
)

WORKER_EVENTS = Counter("taskstream_worker_events_total", "Events produced by the worker", ["type"])
