"""``?since=<ISO 8601 time>`` on the stream (#13): where it starts, what it refuses, and the
floor that keeps earlier records out of the live part too. In-process, like
tests/test_stream.py, with Kafka's answer about times faked at the replayer's edge; the
real broker's answer is tested in tests/test_since_kafka.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from realtime import stream as stream_module
from realtime.replay.kafka import PartitionBounds, Unfillable
from realtime.request import BadRequest, parse_since
from realtime.store import StoredEvent
from streaming.cursor import PartitionKey
from tests.fakes import task_event as event
from tests.sse import SSEEvent, parse_stream
from tests.test_stream import (
    ALICE,
    Stream,
    bearer,
    cursor_id,
    in_memory_layer_and_store,  # noqa: F401 (the autouse fixture, reused)
    push,
)

SINCE = "2026-01-02T03:04:05.500Z"


class TimeKafka:
    """Kafka as the replayer sees it: where ``since`` falls per partition, and nothing to
    read (the in-memory store holds everything these tests produce)."""

    def __init__(self, bounds: dict[int, PartitionBounds] | None = None) -> None:
        self.bounds = bounds or {}
        self.asked: list[datetime] = []
        self.down = False

    async def offsets_at(self, source: str, when: datetime) -> dict[int, PartitionBounds]:
        if self.down:
            raise Unfillable("kafka-unavailable: test")
        self.asked.append(when)
        return self.bounds

    async def check(self, key: PartitionKey, after: int, before: int | None) -> str | None:
        return None

    async def read(
        self,
        user_id: int,
        key: PartitionKey,
        after: int,
        before: int | None,
        epoch: str | None,
    ) -> list[StoredEvent]:
        return []


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> TimeKafka:
    fake = TimeKafka()
    monkeypatch.setattr(stream_module, "get_kafka_replayer", lambda: fake)
    return fake


def since_query(text: str) -> bytes:
    return f"since={quote(text)}".encode()


def frames(stream: Stream) -> list[SSEEvent]:
    return [e for e in parse_stream(stream.buffer.split("\n")) if isinstance(e, SSEEvent)]


async def test_since_replays_from_the_first_record_at_the_time_then_goes_live(
    kafka: TimeKafka,
) -> None:
    await push([event(ALICE, n) for n in range(5)])
    # Partition 0: offsets 0..4, the first at or after the time is 2. Partition 1 has no
    # record at or after it yet: its 7 records are all earlier.
    kafka.bounds = {0: PartitionBounds(2, 0, 5), 1: PartitionBounds(-1, 0, 7)}
    stream = Stream(bearer(ALICE), since_query(SINCE))
    start = await stream.open()
    assert start["status"] == 200
    assert dict(start["headers"])[b"taskstream-resumed-from"] == cursor_id(1).encode()
    replayed = await stream.events(3)
    assert [e.id for e in replayed] == [cursor_id(n) for n in (2, 3, 4)]
    assert kafka.asked == [datetime(2026, 1, 2, 3, 4, 5, 500000, UTC)]

    # Live: a new event in partition 0, and in partition 1 (which the stream never sent
    # from) an event before the time, arriving late, then one after it.
    await push([event(ALICE, 5)])
    await push([event(ALICE, 4, partition=1), event(ALICE, 7, partition=1)])
    live = (await stream.events(5))[3:]
    assert [e.id for e in live] == [
        cursor_id(5),
        f"{cursor_id(5)},{cursor_id(7, partition=1)}",
    ]
    assert "stream-reset" not in [f.event for f in frames(stream)]
    await stream.disconnect()


async def test_last_event_id_wins_over_since(kafka: TimeKafka) -> None:
    await push([event(ALICE, n) for n in range(5)])
    kafka.bounds = {0: PartitionBounds(4, 0, 5)}
    headers = [*bearer(ALICE), (b"last-event-id", cursor_id(1).encode())]
    stream = Stream(headers, since_query(SINCE))
    assert (await stream.open())["status"] == 200
    assert [e.id for e in await stream.events(3)] == [cursor_id(n) for n in (2, 3, 4)]
    assert kafka.asked == []  # the time was not even looked up
    await stream.disconnect()


async def test_since_before_what_retention_kept_is_an_explicit_reset(kafka: TimeKafka) -> None:
    await push([event(ALICE, n) for n in range(3, 6)])
    # Retention deleted offsets 0..2; the first record kept (3) is already after the time,
    # so deleted ones may have been too.
    kafka.bounds = {0: PartitionBounds(3, 3, 6)}
    stream = Stream(bearer(ALICE), since_query(SINCE))
    assert (await stream.open())["status"] == 200
    await stream.events(3)
    resets = [json.loads(f.data) for f in frames(stream) if f.event == "stream-reset"]
    assert resets == [
        {"reason": "cursor-expired", "requested": f"since={kafka.asked[0].isoformat()}",
         "resumed_from": "earliest"}
    ]  # fmt: skip
    await stream.disconnect()


async def test_the_first_offset_of_a_partition_replays_it_from_its_start(
    kafka: TimeKafka,
) -> None:
    await push([event(ALICE, n) for n in range(3)])
    kafka.bounds = {0: PartitionBounds(0, 0, 3)}
    stream = Stream(bearer(ALICE), since_query(SINCE))
    start = await stream.open()
    assert dict(start["headers"])[b"taskstream-resumed-from"] == b"earliest"
    assert [e.id for e in await stream.events(3)] == [cursor_id(n) for n in range(3)]
    await stream.disconnect()


async def test_since_while_kafka_does_not_answer_asks_the_client_to_retry(
    kafka: TimeKafka,
) -> None:
    kafka.down = True
    stream = Stream(bearer(ALICE), since_query(SINCE))
    assert (await stream.open())["status"] == 200
    body = await stream.until_end()
    assert body.startswith("retry:") and "stream-open" not in body


async def test_since_counts_against_the_users_kafka_reads(kafka: TimeKafka, settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "REPLAY_KAFKA_PER_MINUTE": 1}
    kafka.bounds = {0: PartitionBounds(-1, 0, 0)}
    reasons = []
    for _ in range(2):
        stream = Stream(bearer(ALICE), since_query(SINCE))
        assert (await stream.open())["status"] == 200
        await stream._read()
        resets = [json.loads(f.data)["reason"] for f in frames(stream) if f.event == "stream-reset"]
        reasons.append(resets)
        await stream.disconnect()
    # (Both opens may straddle a minute boundary: then neither is limited.)
    assert reasons[0] == [] and reasons[1] in ([], ["replay-limit"])
    assert len(kafka.asked) == 2 - len(reasons[1])


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yesterday", "not an ISO 8601 time"),
        ("2026-01-02T03:04:05\x00Z", "printable"),
        ("2026-01-02T03:04:05Z" + "0" * 100, "at most 64 characters"),
        ("2026-01-02T03:04:05", "needs a time zone"),
        ("2026-01-02", "needs a time zone"),
        ("9999-12-31T23:59:59Z", "later than the server's clock"),
        ("2026-06-01T12:00:00.001Z", "later than the server's clock"),
        # A query string's "+" is a space: the offset then does not parse.
        ("2026-01-02T03:04:05 00:00", "write + as %2B"),
        ("2026-01-02T03:04:05é", "printable ASCII"),
    ],
)
def test_hostile_times_are_refused_naming_the_parameter(text: str, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_since(text, NOW)
    assert refused.value.code == "bad_since"
    assert refused.value.detail.startswith("since: ") and says in refused.value.detail


def test_times_with_a_zone_up_to_now_are_accepted() -> None:
    assert parse_since("2026-06-01T12:00:00Z", NOW) == NOW
    assert parse_since("2026-06-01T14:00:00+02:00", NOW) == NOW
    # Before anything Kafka can hold: accepted (the stream then starts at the earliest).
    assert parse_since("0001-01-01T00:00:00Z", NOW).year == 1


@pytest.mark.parametrize(
    "query",
    [
        b"since=garbage",
        b"since=2026-01-02T03%3A04%3A05%00Z",
        b"since=2026-01-02T03:04:05+00:00",
        b"since=" + b"9" * 5000,
        b"since=2026-01-02T03:04:05",
    ],
)
async def test_a_bad_since_is_400_json_before_any_stream_bytes(
    kafka: TimeKafka, query: bytes
) -> None:
    stream = Stream(bearer(ALICE), query)
    start = await stream.open()
    assert start["status"] == 400
    body = json.loads((await stream.comm.receive_output(5))["body"])
    assert body["code"] == "bad_since" and body["detail"].startswith("since: ")
    assert kafka.asked == []


def test_since_rounds_up_to_kafkas_milliseconds() -> None:
    from realtime.replay.selection import _millis

    assert _millis(datetime(1970, 1, 1, 0, 0, 1, 1, UTC)) == 1001
    assert _millis(datetime(1970, 1, 1, 0, 0, 1, 0, UTC)) == 1000
    assert _millis(datetime(2026, 1, 2, 3, 4, 5, 123000, UTC)) == 1767323045123
    assert _millis(datetime(1, 1, 1, tzinfo=UTC)) == 0
    assert _millis(datetime(2026, 1, 2, tzinfo=UTC) - timedelta(microseconds=1)) % 1000 == 0
