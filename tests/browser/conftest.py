"""A running ``modrpc up`` and a real headless Chromium for the playground's browser tests.

The browser is Debian's ``chromium`` driven by its ``chromedriver`` through Selenium, with no
download of any kind (Selenium Manager is kept offline). The Makefile installs both with apt-get
when they are missing; a machine without them skips these tests, except under ``CI=true``,
where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway_modules.commands import ROOT, isolated_env
from tests.services import free_port, in_ci

CHROMIUM = os.environ.get("MODRPC_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MODRPC_TEST_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
VIEWPORT = (1280, 800)


@dataclass
class Up:
    """A ``modrpc up`` child process and where its playground is."""

    process: subprocess.Popen[bytes]
    gateway: str
    playground: str
    folder: Path


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if not missing:
        return
    message = f"the browser tests need Debian's chromium and chromium-driver; missing: {', '.join(missing)}"
    if in_ci():
        pytest.fail(message + " (CI=true: `make test` installs them)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``modrpc up`` on the example modules, its gateway and admin port free ones, state in tmp."""
    _require_browser()
    folder = tmp_path_factory.mktemp("playground-up")
    gateway_port, admin_port = free_port(), free_port()
    env = isolated_env(folder)
    env.update(
        MODRPC_ADMIN_PORT=str(admin_port),
        MODRPC_GATEWAY_PORT=str(gateway_port),
        # Asking for a snapshot with x-flags is a privilege; the minted dev token gets this role.
        MODRPC_AUTH__SNAPSHOT_ROLES='["snapshots:take"]',
    )
    log = (folder / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log
    )
    assert process.stdout is not None
    ready = ""
    give_up = time.monotonic() + 90
    while time.monotonic() < give_up:
        line = process.stdout.readline().decode()
        if not line:
            break
        if "ready" in line:
            ready = line
            break
    if "playground on" not in ready:
        process.kill()
        process.wait()
        pytest.fail(f"modrpc up printed no ready line with the playground: {ready!r}\n{(folder / 'up.log').read_text()[-3000:]}")
    url = ready.split("playground on ", 1)[1].strip()
    assert url == f"http://127.0.0.1:{admin_port}/playground/", ready
    try:
        yield Up(process, f"127.0.0.1:{gateway_port}", url, folder)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium at 1280x800; the test fails on any console error it logged."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
    )
    driver.implicitly_wait(0)
    try:
        yield driver
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert errors == [], f"the browser console logged errors: {errors}"
    finally:
        driver.quit()
