"""A real browser follows a durable channel through an app process that crashes.

Headless chromium (selenium, the system's chromedriver) opens the page of
tests/web_app.py, whose ``EventSource("/events/log")`` follows the durable channel
``log``; the app runs under hypercorn (trio) or uvicorn (asyncio) over a real Redis.
The app process is killed (SIGKILL) while the page follows, events are published
while it is down, it comes back on the same port, and the browser, reconnecting by
itself with ``Last-Event-ID``, ends with every event once and in order, no gap.

Needs chromium and chromedriver (``scripts/ensure-browser``): skipped without them,
except under CI, where that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import pytest
from selenium import webdriver  # the `web` test extra
from selenium.common.exceptions import WebDriverException

import tidings
from tests.redis_server import RedisServer
from tidings.testing import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent

SERVERS: dict[str, Callable[[int], list[str]]] = {
    "hypercorn": lambda port: [
        *("-m", "hypercorn", "--worker-class", "trio"),
        *("--bind", f"127.0.0.1:{port}", "tests.web_app:app"),
    ],
    "uvicorn": lambda port: [
        *("-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", "warning", "tests.web_app:app"),
    ],
}

#: EventSource waits about 3 s before reconnecting (the app sends no ``retry:``).
RECONNECT_LIMIT = 30.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(
            name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None
        )
        reason = f"{missing} not on the PATH (scripts/ensure-browser installs them)"
        if _in_ci():
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return browser, driver


@pytest.fixture
def driver(
    chromium: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[webdriver.Chrome]:
    """Headless chromium, on a profile of its own; selenium downloads nothing."""
    browser, chromedriver = chromium
    monkeypatch.setenv("SE_OFFLINE", "true")  # no Selenium Manager downloads, ever
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    service = webdriver.ChromeService(
        executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log")
    )
    chrome = webdriver.Chrome(options=options, service=service)
    try:
        yield chrome
    finally:
        chrome.quit()


class App:
    """tests/web_app.py in a server process on a fixed port: started, killed (the
    whole process group: hypercorn serves from a child process), started again."""

    def __init__(self, server: str, redis_url: str, namespace: str, logs: Path) -> None:
        self.server = server
        self.port = free_port()
        self.namespace = namespace
        self.env = {**os.environ, "TIDINGS_URL": redis_url, "TIDINGS_NAMESPACE": namespace}
        self.logs = logs
        self.started = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=2) as response:
            return dict(json.load(response))

    def start(self) -> None:
        self.started += 1
        log = self.logs / f"{self.server}-{self.started}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *SERVERS[self.server](self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own, to kill it whole
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.server} exited:\n{log.read_text()}")
            with suppress(OSError):
                self.stats()
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.server} never served on {self.port}:\n{log.read_text()}")

    def kill(self) -> None:
        """Crash it: SIGKILL to every process of the server, no shutdown at all."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """A graceful stop (SIGTERM), once no browser follows: it must exit at once."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            deadline = time.monotonic() + 10
            while (clients := self.stats()["clients"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert clients == 0, f"{clients} stream(s) still open after the browser left"
            process.terminate()
            code = process.wait(timeout=10)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # anything left of it
            process.wait()
        # A clean lifespan shutdown (uvicorn re-raises SIGTERM once it is done).
        assert code in (0, -signal.SIGTERM), code
        for log in sorted(self.logs.glob(f"{self.server}-*.log")):
            assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def app(anyio_backend: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[App]:
    # Each server on its own event loop: hypercorn on trio, uvicorn on asyncio.
    server = "hypercorn" if anyio_backend == "trio" else "uvicorn"
    app = App(server, redis_server.url, f"web{uuid.uuid4().hex[:8]}", tmp_path)
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def page(driver: webdriver.Chrome, app: App) -> Iterator[webdriver.Chrome]:
    """The app's page, open in the browser; left before the app stops."""
    driver.get(f"{app.url}/")
    try:
        yield driver
    finally:
        # Closed by the page itself: leaving it is not enough, chromium's back/forward
        # cache keeps the page, its stream open.
        with suppress(WebDriverException):  # (a broken page: the test failed already)
            driver.execute_script("source.close()")
        driver.get("about:blank")


# What the page holds: its events, how often its EventSource opened, a gap frame.
_STATE = "return {got: window.got, opened: window.opened, gap: window.gap ?? null}"
# The page's EventSource counts a "hello" event it gets: the test's handshake.
_HELLO = """
if (!window.hellos) {
  window.hellos = 0;
  source.addEventListener("hello", () => { window.hellos += 1; });
}
return window.hellos;
"""


async def until(
    page: webdriver.Chrome, condition: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll the page's state (selenium in a thread) until ``condition(state)``."""
    state: dict[str, Any] = {}
    try:
        with anyio.fail_after(RECONNECT_LIMIT):
            while True:
                state = await anyio.to_thread.run_sync(page.execute_script, _STATE)
                if condition(state):
                    return state
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"never {what} in {RECONNECT_LIMIT} s; the page has {state}") from None


async def test_a_browser_gets_every_event_once_in_order_across_an_app_crash(
    page: webdriver.Chrome, app: App
) -> None:
    channels = tidings.Channels(
        app.env["TIDINGS_URL"],
        namespace=app.namespace,
        durable={"log": tidings.Retention(max_len=100_000)},
    )
    batch = 40
    batches = iter(range(0, 4 * batch, batch))

    async def publish_batch() -> int:
        first = next(batches)
        for n in range(first, first + batch):
            await channels.publish("log", "e", n)
        return first + batch

    async with channels:
        # A new EventSource starts at the end of the log: once it got one of these
        # hellos, its subscription is in place and it misses nothing after.
        with anyio.fail_after(10):
            while not await anyio.to_thread.run_sync(page.execute_script, _HELLO):
                await channels.publish("log", "hello")
                await anyio.sleep(0.05)

        total = await publish_batch()  # live
        await until(page, lambda s: len(s["got"]) >= total, "got the first batch")

        await anyio.to_thread.run_sync(app.kill)
        total = await publish_batch()  # while the app is down
        await anyio.to_thread.run_sync(app.start)  # same port
        total = await publish_batch()  # up again, the browser not yet back (~3 s)
        await until(page, lambda s: s["opened"] >= 2, "reconnected")
        total = await publish_batch()  # live again, after the resume

        state = await until(page, lambda s: len(s["got"]) >= total, f"got {total} events")
        await anyio.sleep(0.5)  # nothing more comes (no duplicates late)
        state = await anyio.to_thread.run_sync(page.execute_script, _STATE)

    assert state["got"] == list(range(total))
    assert state["gap"] is None
    assert state["opened"] >= 2  # it reconnected
    assert await anyio.to_thread.run_sync(app.stats) == {"clients": 1, "overflowed": 0}
