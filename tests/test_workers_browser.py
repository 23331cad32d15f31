"""Celery and RQ on the demo page (#12, "Done when"): a task of each routed kind, started
through ``POST /api/v1/tasks/``, moves its progress bar on `/` in Chromium and its card ends
in the task's terminal state; a job that raises ends failed, with its exception's message.

The workers are the ``workers`` fixture's (tests/conftest.py), as in tests/test_workers_e2e.py.
The page is logged in through its form, as frontend/e2e/helpers.ts does; the tasks are
created with the user's bearer token, so the page learns of them from their first event.
A MutationObserver in the page records every state each card's DOM went through, so no
rendered value can slip between two polls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser import chromium, e2e_user, own_server, wait_js
from tests.conftest import ROOT, Proc, Stack, start_task

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

DEMO_BUNDLE = ROOT / "realtime" / "static" / "taskstream" / "dist" / "demo.js"

# window.tsCards[task id]: the distinct [aria-valuenow, bar width, data-status, message] the
# task's card showed, in order, from its first render.
RECORD_CARDS = """
window.tsCards = {};
const record = () => {
  for (const card of document.querySelectorAll(".task[data-task-id]")) {
    const bar = card.querySelector("[role=progressbar]");
    const seen = [
      Number(bar.getAttribute("aria-valuenow")),
      bar.firstElementChild.style.width,
      card.dataset.status,
      card.querySelector(".msg").textContent,
    ];
    const trail = (window.tsCards[card.dataset.taskId] ??= []);
    const last = trail[trail.length - 1];
    if (last === undefined || last.some((value, i) => value !== seen[i])) trail.push(seen);
  }
};
new MutationObserver(record).observe(document.body, {
  subtree: true, childList: true, attributes: true, characterData: true,
});
record();
"""


def card_trail(driver: webdriver.Chrome, task_id: str) -> list[tuple[int, str, str, str]]:
    trail: list[list[Any]] = driver.execute_script(
        "return window.tsCards[arguments[0]] ?? [];", task_id
    )
    return [(int(p), str(w), str(s), str(m)) for p, w, s, m in trail]


def wait_status(driver: webdriver.Chrome, task_id: str, status: str, timeout: float = 60) -> None:
    wait_js(
        driver,
        f"(window.tsCards[{task_id!r}] ?? []).some((s) => s[2] === {status!r})",
        timeout,
        f"the card of {task_id} to show {status}",
    )


def page_events(driver: webdriver.Chrome, task_id: str) -> list[str]:
    """The types of the task's events as the page's client received them."""
    types: list[str] = driver.execute_script(
        "return window.taskstreamDemo.log"
        ".filter((e) => e.taskId === arguments[0]).map((e) => e.type);",
        task_id,
    )
    return types


@pytest.fixture(scope="module")
def demo_server(
    workers: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proc, str]]:
    """A server of the stack that serves the demo page: DEBUG serves its bundle from
    realtime/static/, as in tests/test_frontend.py."""
    if not DEMO_BUNDLE.exists():
        pytest.fail(f"{DEMO_BUNDLE} is missing: run `make frontend` (make test does)")
    log_dir = tmp_path_factory.mktemp("demo-server")
    with own_server(workers.env, log_dir, "demo_server", DJANGO_DEBUG="true") as running:
        yield running


def moved(trail: list[tuple[int, str, str, str]]) -> list[int]:
    """The strictly intermediate values the bar showed while the task ran."""
    return [p for p, _, status, _ in trail if 0 < p < 100 and status == "running"]


@pytest.mark.parametrize("kind", ["count-celery", "count-rq"])
def test_a_routed_task_moves_its_progress_bar_on_the_demo_page_and_ends_there(
    workers: Stack,
    demo_server: tuple[Proc, str],
    django_user_model: type[User],
    kind: str,
) -> None:
    server, base = demo_server
    who = e2e_user(django_user_model, "workers")
    owner = django_user_model.objects.get(username=who["username"])
    with chromium() as driver:
        try:
            driver.get(f"{base}/")
            for name in ("username", "password"):
                field = driver.find_element(By.CSS_SELECTOR, f"#login input[name={name}]")
                field.clear()
                field.send_keys(who[name])
            driver.find_element(By.CSS_SELECTOR, "#login button").click()
            wait_js(
                driver,
                "document.querySelector('#connection')?.dataset.state === 'open'",
                30,
                "the demo page to log in and open its stream",
            )
            driver.execute_script(RECORD_CARDS)

            ok = start_task(workers, owner, kind, {"steps": 10, "step_ms": 300})
            bad = start_task(workers, owner, kind, {"steps": 10, "step_ms": 300, "fail_at": 6})
            wait_status(driver, ok, "succeeded")
            wait_status(driver, bad, "failed")
            shown = {task_id: card_trail(driver, task_id) for task_id in (ok, bad)}
            received = {task_id: page_events(driver, task_id) for task_id in (ok, bad)}
        except Exception:
            print(f"--- {server.name}\n{server.log()[-4000:]}")
            raise

    # The bar moved: values strictly between 0 and 100, never backwards, then 100 and done.
    trail = shown[ok]
    assert moved(trail), trail
    assert [p for p, *_ in trail] == sorted(p for p, *_ in trail), trail
    assert all(width == f"{p}%" for p, width, *_ in trail), trail
    assert trail[-1] == (100, "100%", "succeeded", 'done: {"steps":10}'), trail
    assert received[ok][-1] == "task.succeeded", received[ok]

    # The failing job moved the bar too, then its card shows it failed, with the message.
    trail = shown[bad]
    assert moved(trail), trail
    assert trail[-1][2:] == ("failed", "failed at step 6"), trail
    assert trail[-1][0] < 100, trail
    assert received[bad][-1] == "task.failed", received[bad]
    assert "task.succeeded" not in received[bad], received[bad]
