"""The order ``tasks.turns`` keeps between overlapping batch transactions: pure threads, no
database. Each wait has a deadline; a turn that did not wait is seen by what it did first."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tasks.turns import BeforeFailed, Released, Turn

DEADLINE = 10.0


def in_thread(
    step: Callable[[], None], then: Callable[[], None] = lambda: None
) -> tuple[threading.Thread, list[BaseException]]:
    """``step`` then ``then`` on a thread of their own; what they raise is collected."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            step()
            then()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_a_batch_begins_only_once_the_one_before_holds_its_locks() -> None:
    first = Turn(None)
    second = Turn(first)
    order: list[str] = []
    thread, errors = in_thread(second.begin, lambda: order.append("second begins"))
    thread.join(0.2)  # not a wait for a result: the thread must still be blocked
    assert thread.is_alive() and order == []
    order.append("first locked")
    first.locked(frozenset())
    thread.join(DEADLINE)
    assert not thread.is_alive() and errors == []
    assert order == ["first locked", "second begins"]


def test_a_batch_writes_only_once_the_one_before_committed() -> None:
    first = Turn(None)
    second = Turn(first)
    first.locked(frozenset())
    second.begin()
    order: list[str] = []
    thread, errors = in_thread(second.may_write, lambda: order.append("second writes"))
    thread.join(0.2)
    assert thread.is_alive() and order == []
    order.append("first committed")
    first.end(committed=True)
    thread.join(DEADLINE)
    assert errors == [] and order == ["first committed", "second writes"]


def test_a_batch_rolls_back_when_the_one_before_rolls_back_to_try_again() -> None:
    first = Turn(None)
    second = Turn(first)
    first.locked(frozenset())
    thread, errors = in_thread(second.may_write)
    first.release()
    thread.join(DEADLINE)
    assert [type(e) for e in errors] == [Released]
    # It begins again only once the one before is over (not at its next attempt's locks).
    waited, failures = in_thread(second.wait_before)
    first.locked(frozenset())
    waited.join(0.2)
    assert waited.is_alive()
    first.end(committed=True)
    waited.join(DEADLINE)
    assert failures == []


def test_nothing_after_a_batch_that_ended_unapplied_is_applied() -> None:
    first = Turn(None)
    second = Turn(first)
    third = Turn(second)
    first.end(committed=False)
    with pytest.raises(BeforeFailed):
        second.begin()
    second.end(committed=False)
    for step in (third.begin, third.may_write, third.wait_before):
        with pytest.raises(BeforeFailed):
            step()


def test_a_turn_ends_once_and_lets_go_of_the_one_before() -> None:
    first = Turn(None)
    second = Turn(first)
    second.end(committed=True)
    second.end(committed=False)  # a later way out changes nothing
    assert second.committed
    second.begin()  # nothing before it any more
    assert second._before is None
    first.end(committed=True)
