"""The live admin in Chromium (#13, "Done when"): staff log in to the admin, a demo task
runs for a few seconds, and its progress bar on the task list moves without a reload, to
100 and "succeeded"; a non-staff user gets 403 on the staff stream, anonymous 401.

The server is one of the stack's (its consume_events and demo worker feed it through the
Redis layer), in debug so that it serves the admin's script from realtime/static/ (built
by `make frontend`). A MutationObserver records every value the task's bar showed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from selenium.webdriver.common.by import By

from streaming import conf
from streaming.kafka import topic_epoch
from tests.browser import chromium, e2e_user, own_server, wait_js
from tests.conftest import ROOT, Proc, Stack, access_token, start_task

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ADMIN_BUNDLE = ROOT / "realtime" / "static" / "taskstream" / "dist" / "admin-live.js"
STAFF_STREAM = "/api/v1/events/stream?scope=staff"

# window.tsBars[task id]: the distinct [value, status] its progress widget showed, in order;
# window.tsSamePage: set once, so a reload (which would clear it) cannot go unnoticed.
RECORD_BARS = """
window.tsSamePage = true;
window.tsBars = {};
const record = () => {
  for (const widget of document.querySelectorAll("[data-ts-field=progress]")) {
    const seen = [widget.querySelector("progress").value, widget.dataset.status];
    const trail = (window.tsBars[widget.dataset.tsTask] ??= []);
    const last = trail[trail.length - 1];
    if (last === undefined || last[0] !== seen[0] || last[1] !== seen[1]) trail.push(seen);
  }
};
new MutationObserver(record).observe(document.body, {
  subtree: true, childList: true, attributes: true, characterData: true,
});
record();
"""


@pytest.fixture(scope="module")
def admin_server(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proc, str]]:
    if not ADMIN_BUNDLE.exists():
        pytest.fail(f"{ADMIN_BUNDLE} is missing: run `make frontend` (make test does)")
    log_dir = tmp_path_factory.mktemp("admin-server")
    with own_server(stack.env, log_dir, "admin_server", DJANGO_DEBUG="true") as running:
        yield running


def staff_login(django_user_model: type[User]) -> dict[str, str]:
    login = e2e_user(django_user_model, "admin-staff")
    django_user_model.objects.filter(username=login["username"]).update(
        is_staff=True, is_superuser=True
    )
    return login


def wait_live(driver: Any) -> None:
    wait_js(
        driver,
        "document.querySelector('#ts-live')?.dataset.state === 'open'",
        30,
        "the task list to open the staff stream",
    )


def log_in(driver: Any, base: str, staff: dict[str, str]) -> None:
    driver.get(f"{base}/admin/login/?next=/admin/tasks/asynctask/")
    driver.find_element(By.ID, "id_username").send_keys(staff["username"])
    driver.find_element(By.ID, "id_password").send_keys(staff["password"])
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def bar_trail(driver: Any, task_id: str) -> list[tuple[int, str]]:
    trail: list[list[Any]] = driver.execute_script(
        "return window.tsBars[arguments[0]] ?? [];", task_id
    )
    return [(int(value), str(status)) for value, status in trail]


def test_the_task_lists_progress_bar_moves_live_while_a_task_runs(
    stack: Stack, admin_server: tuple[Proc, str], django_user_model: type[User]
) -> None:
    server, base = admin_server
    staff = staff_login(django_user_model)
    owner = django_user_model.objects.create_user("admin-owner")
    with chromium() as driver:
        try:
            log_in(driver, base, staff)
            wait_live(driver)
            # Logged in and warmed up, start the task (ten steps a second apart), then open
            # the list showing it: from there on the page is never reloaded.
            task_id = start_task(stack, owner, "demo", {"steps": 10, "step_ms": 1000})
            driver.get(f"{base}/admin/tasks/asynctask/?q={task_id}")
            wait_live(driver)
            driver.execute_script(RECORD_BARS)
            wait_js(
                driver,
                f"(window.tsBars[{task_id!r}] ?? []).some((s) => s[1] === 'succeeded')",
                60,
                "the task's bar to show it succeeded",
            )
            trail = bar_trail(driver, task_id)
            same_page = driver.execute_script("return window.tsSamePage === true;")
            state = driver.execute_script(
                "return document.querySelector('#ts-live').dataset.state;"
            )
        except Exception:
            print(f"--- {server.name}\n{server.log()[-4000:]}")
            raise

    assert same_page and state == "open"
    values = [value for value, _ in trail]
    # The bar moved while the page stayed: values strictly between 0 and 100 (at least two
    # of them, so it is not just the snapshot), never backwards, then 100 and succeeded.
    moving = [value for value, status in trail if 0 < value < 100 and status == "running"]
    assert len(set(moving)) >= 2, trail
    assert values == sorted(values), trail
    assert trail[-1] == (100, "succeeded"), trail


def test_the_staff_stream_refuses_non_staff_with_403_and_anonymous_with_401(
    admin_server: tuple[Proc, str], django_user_model: type[User]
) -> None:
    _, base = admin_server
    member = django_user_model.objects.create_user("not-staff")
    refused = httpx.get(
        f"{base}{STAFF_STREAM}",
        headers={"Authorization": f"Bearer {access_token(member)}"},
        timeout=10,
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["code"] == "staff_only"
    anonymous = httpx.get(f"{base}{STAFF_STREAM}", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"


TIMELINE = "[...document.querySelectorAll('[data-ts-timeline] tbody tr[data-position]')]"


def test_the_task_pages_timeline_gains_each_event_live_keyed_as_the_log_keys_it(
    stack: Stack, admin_server: tuple[Proc, str], django_user_model: type[User]
) -> None:
    server, base = admin_server
    staff = staff_login(django_user_model)
    owner = django_user_model.objects.create_user("timeline-owner")
    with chromium() as driver:
        try:
            log_in(driver, base, staff)
            wait_live(driver)
            task_id = start_task(stack, owner, "demo", {"steps": 4, "step_ms": 1000})
            driver.get(f"{base}/admin/tasks/asynctask/{task_id}/change/")
            wait_live(driver)
            driver.execute_script("window.tsSamePage = true;")
            at_load = driver.execute_script(f"return {TIMELINE}.length;")
            wait_js(
                driver,
                f"{TIMELINE}.some((r) => r.cells[0].textContent === 'task.succeeded')",
                60,
                "the timeline to show the task's last event",
            )
            live = driver.execute_script(f"return {TIMELINE}.map((r) => r.dataset.position);")
            same_page = driver.execute_script("return window.tsSamePage === true;")
            driver.refresh()
            logged = driver.execute_script(f"return {TIMELINE}.map((r) => r.dataset.position);")
        except Exception:
            print(f"--- {server.name}\n{server.log()[-4000:]}")
            raise

    assert same_page and len(live) > at_load, (at_load, live)
    # The rows added live are keyed exactly as the log's rows a reload renders (position and
    # the topic's epoch), in the same order, none twice.
    assert live == logged
    assert len(set(live)) == len(live)
    epoch = topic_epoch(conf.get().TOPIC_EVENTS)
    assert all(position.endswith(f"@{epoch}") for position in live), live
