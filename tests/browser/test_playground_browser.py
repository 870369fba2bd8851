"""The playground as a person uses it: a real ``modrpc up``, a real headless Chromium.

Each test drives the page by its controls (no API shortcut), saves a screenshot in its own
temporary folder, and fails on any error in the browser's console (see ``conftest.browser``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import Up

pytestmark = pytest.mark.browser

WAIT = 20.0
NONE = "\u2013"
"""What the page shows for no value (an en dash)."""


def wait(driver: WebDriver, condition: Any, timeout: float = WAIT) -> Any:
    """``condition`` once true; an element the page re-rendered meanwhile is simply looked up again."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition)


def css(driver: WebDriver, selector: str, timeout: float = WAIT) -> WebElement:
    element: WebElement = wait(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, selector)), timeout)
    return element


def text_in(driver: WebDriver, selector: str, text: str, timeout: float = WAIT) -> WebElement:
    wait(driver, ec.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text), timeout)
    return driver.find_element(By.CSS_SELECTOR, selector)


def shot(driver: WebDriver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    return path


def open_explorer(driver: WebDriver, up: Up, method: str, version: str) -> None:
    driver.get(f"{up.playground}#/explorer/users/{method}/{version}")
    text_in(driver, ".editor-head", f"{method}Request at {version}")
    assert Select(driver.find_element(By.ID, "explorer-version")).first_selected_option.get_attribute("value") == version


def send(driver: WebDriver, request: dict[str, Any], *, snapshot: bool = False) -> dict[str, str]:
    """Type ``request`` into the editor, send it with Ctrl+Enter, and read the answer."""
    editor = driver.find_element(By.ID, "request-editor")
    editor.clear()
    editor.send_keys(json.dumps(request))
    box = driver.find_element(By.ID, "explorer-snapshot")
    if box.is_selected() != snapshot:
        box.click()
    before = driver.find_elements(By.ID, "response-request-id")
    old = before[0].text if before else None
    editor.send_keys(Keys.CONTROL, Keys.ENTER)
    wait(driver, lambda d: (e := d.find_elements(By.ID, "response-request-id")) and e[0].text != old)
    status = driver.find_element(By.CSS_SELECTOR, ".response-head .pill").text
    body = driver.find_elements(By.ID, "response-body")
    return {
        "status": status,
        "request_id": driver.find_element(By.ID, "response-request-id").text,
        "body": body[0].text if body else "",
        "all": driver.find_element(By.ID, "response").text,
    }


def mint(driver: WebDriver) -> None:
    driver.find_element(By.ID, "mint-token").click()
    wait(driver, lambda d: d.find_element(By.ID, "explorer-token").get_attribute("value"))


def create_user(driver: WebDriver, up: Up) -> tuple[str, str]:
    """A user made through the explorer at 2025-01-15 (the old ``name`` shape): its id, and the
    request id of the call."""
    open_explorer(driver, up, "CreateUser", "2025-01-15")
    mint(driver)
    answer = send(driver, {"name": "Grace Hopper", "email": f"grace-{uuid.uuid4().hex[:10]}@example.com"})
    assert answer["status"] == "OK", answer["all"]
    created = json.loads(answer["body"])
    assert created["name"] == "Grace Hopper"
    return str(created["id"]), answer["request_id"]


def test_the_catalog_lists_users_and_its_diff_marks_name_removed(up: Up, browser: WebDriver, tmp_path: Path) -> None:
    driver = browser
    driver.get(up.playground)
    search = css(driver, "[data-search]")
    search.send_keys("users")
    link = wait(driver, ec.element_to_be_clickable((By.CSS_SELECTOR, ".sidebar a.item")))
    assert "users.v1.UsersService" in link.text
    link.click()
    text_in(driver, "h1", "users")
    text_in(driver, ".versions", "2025-06-01")
    assert "stable" in driver.find_element(By.CSS_SELECTOR, ".versions").text
    assert "GetUser" in driver.find_element(By.CSS_SELECTOR, "table.data").text
    Select(css(driver, "#diff-from")).select_by_value("2025-01-15")
    Select(css(driver, "#diff-to")).select_by_value("2025-06-01")
    rows = text_in(driver, "#diff-body", "User.name")
    removed = [r.text for r in rows.find_elements(By.CSS_SELECTOR, ".change") if "\nUser.name " in r.text]
    assert removed and "field removed" in removed[0] and "BREAKING" in removed[0], removed
    assert "forward requests: CreateUser" in rows.text
    driver.execute_script("window.scrollTo(0, 0)")
    driver.get(f"{up.playground}#/catalog/users")
    text_in(driver, ".versions", "2025-06-01")
    shot(driver, tmp_path, "catalog")


def test_the_explorer_sends_get_user_at_the_old_version_and_its_trace_opens(
    up: Up, browser: WebDriver, tmp_path: Path
) -> None:
    driver = browser
    user_id, created = create_user(driver, up)
    open_explorer(driver, up, "GetUser", "2025-01-15")
    answer = send(driver, {"id": user_id})
    assert answer["status"] == "OK", answer["all"]
    body = json.loads(answer["body"])
    assert body["name"] == "Grace Hopper" and "given_name" not in body
    assert "x-request-id" in driver.find_element(By.ID, "trailers").text
    shot(driver, tmp_path, "explorer")

    driver.find_element(By.ID, "open-trace").click()
    waterfall = text_in(driver, "#waterfall", "worker users.GetUser")
    rows = waterfall.text
    for expected in ("gateway users.v1.UsersService/GetUser", "authenticate", "resolve version → 2025-01-15", "transform backward GetUser", "handler users.GetUser"):
        assert expected in rows, f"{expected!r} not in the trace:\n{rows}"
    assert answer["request_id"] in driver.find_element(By.CSS_SELECTOR, "h1").text
    shot(driver, tmp_path, "trace")

    # The CreateUser call's lifecycle: its hook, the forward transform, the event it published.
    search = css(driver, "[data-search]")
    search.send_keys(created, Keys.ENTER)
    rows = text_in(driver, "#waterfall", "publish users.created").text
    for expected in ("transform forward CreateUser", "hook note-caller", "handler users.CreateUser"):
        assert expected in rows, f"{expected!r} not in the trace:\n{rows}"


def test_a_bad_request_shows_its_field_violations(up: Up, browser: WebDriver, tmp_path: Path) -> None:
    driver = browser
    open_explorer(driver, up, "CreateUser", "2025-06-01")
    mint(driver)
    answer = send(driver, {"given_name": "", "email": "not-an-email"})
    assert answer["status"] == "INVALID_ARGUMENT"
    violations = css(driver, "#violations").text
    assert "given_name" in violations and "email" in violations and "not-an-email" in violations
    shot(driver, tmp_path, "violations")


def test_a_snapshot_replays_at_the_other_version_and_the_diff_shows(up: Up, browser: WebDriver, tmp_path: Path) -> None:
    driver = browser
    user_id, _ = create_user(driver, up)
    open_explorer(driver, up, "GetUser", "2025-06-01")
    answer = send(driver, {"id": user_id}, snapshot=True)
    assert answer["status"] == "OK", answer["all"]

    driver.get(f"{up.playground}#/snapshots")
    item = wait(driver, lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, ".sidebar a.item") if answer["request_id"] in a.text), None))
    item.click()
    text_in(driver, "h1", "users.GetUser")
    Select(css(driver, "#replay-a")).select_by_value("2025-06-01")
    Select(css(driver, "#replay-b")).select_by_value("2025-01-15")
    driver.find_element(By.ID, "replay").click()
    diff = text_in(driver, "#replay-diff", "given_name")
    changes = {
        cells[0].text: (cells[1].text, cells[2].text, cells[3].text)
        for row in diff.find_elements(By.CSS_SELECTOR, "tbody tr")
        if (cells := row.find_elements(By.TAG_NAME, "td"))
    }
    assert changes["name"] == ("added", NONE, '"Grace Hopper"'), changes
    assert changes["given_name"] == ("removed", '"Grace"', NONE), changes
    assert "transform" in css(driver, "#trace-diff").text
    assert "sandboxed" in driver.find_element(By.ID, "replay-result").text
    shot(driver, tmp_path, "replay")

    # Property 37: the hook in the method's manifest, played back against the stored request.
    hooks = css(driver, "#hooks")
    assert "note-caller" in hooks.text
    hooks.find_element(By.CSS_SELECTOR, "button").click()
    played = text_in(driver, "#hook-result", "State after")
    assert "before hook note-caller" in played.text and '"caller"' in played.text and "OK" in played.text


def test_the_keyboard_moves_between_views_and_the_live_view_counts_calls(up: Up, browser: WebDriver, tmp_path: Path) -> None:
    driver = browser
    driver.get(up.playground)
    css(driver, ".sidebar a.item")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("5")
    live = text_in(driver, "#live-table", "/users.v1.UsersService/")
    assert "Calls/s" in live.text and "p99" in live.text
    body.send_keys("1")
    css(driver, ".versions")
    body.send_keys("/")
    assert driver.switch_to.active_element.get_attribute("data-search") == "1"
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    body.send_keys("?")
    assert css(driver, "#help").is_displayed()
    shot(driver, tmp_path, "keyboard")
