"""The Starlette fan-out recipe, end to end: two uvicorn app processes over one real
Redis, real WebSocket and Server-Sent Events clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync import client as websockets_sync  # the `web` test extra

from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent


def _serving(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the app process exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"uvicorn on port {port} never listened")


@pytest.fixture
def apps(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[int]]:
    """Two app processes on free ports, sharing the test's Redis."""
    ports = [free_port(), free_port()]
    env = {**os.environ, "TIDINGS_URL": redis_server.url}
    logs = [tmp_path / f"app{n}.log" for n in range(2)]
    processes = []
    for port, log in zip(ports, logs, strict=True):
        with log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "uvicorn", "examples.starlette_fanout:app"),
                        *("--port", str(port), "--log-level", "warning"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        for port, process in zip(ports, processes, strict=True):
            _serving(port, process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        codes = []
        for process in processes:
            try:
                codes.append(process.wait(timeout=20))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
    # A clean lifespan shutdown (uvicorn re-raises SIGTERM once it is done).
    assert all(code in (0, -15) for code in codes), codes
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()


def _joined(connection: Any) -> None:
    assert json.loads(connection.recv(timeout=10)) == {"joined": "lobby"}


def test_a_message_reaches_browsers_on_every_app_process(apps: list[int]) -> None:
    one, two = apps
    with (
        websockets_sync.connect(f"ws://127.0.0.1:{one}/ws/lobby") as alice,
        websockets_sync.connect(f"ws://127.0.0.1:{two}/ws/lobby") as bob,
        urllib.request.urlopen(f"http://127.0.0.1:{two}/sse/lobby", timeout=10) as feed,
    ):
        _joined(alice)
        _joined(bob)
        assert feed.headers["content-type"].startswith("text/event-stream")
        assert feed.readline() == b"event: joined\n"  # subscribed from here on
        assert feed.readline() == b'data: "lobby"\n'
        assert feed.readline() == b"\n"
        alice.send("hello from one")
        bob.send("hello from two")
        heard_by_alice = [json.loads(alice.recv(timeout=10)) for _ in range(2)]
        heard_by_bob = [json.loads(bob.recv(timeout=10)) for _ in range(2)]
        sse = []
        while len(sse) < 2:
            line = feed.readline()
            if line.startswith(b"data: "):
                sse.append(json.loads(line[len(b"data: ") :]))
    expected = [{"text": "hello from one"}, {"text": "hello from two"}]
    for heard in (heard_by_alice, heard_by_bob, sse):
        assert sorted(heard, key=str) == expected
