"""Every example runs, for real, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def test_asyncio_app() -> None:
    assert finish(run(str(EXAMPLES / "asyncio_app.py"))) == "results: [4, 9, 16]\n"


def test_trio_iterator() -> None:
    out = finish(run(str(EXAMPLES / "trio_iterator.py")))
    assert out.splitlines() == ["order 0 created", "order 1 created", "order 2 created"]


@pytest.mark.redis
def test_two_processes_chat(redis_server: RedisServer) -> None:
    alice = run(str(EXAMPLES / "chat.py"), "alice", redis_server.url)
    bob = run(str(EXAMPLES / "chat.py"), "bob", redis_server.url)
    heard_by_alice, heard_by_bob = finish(alice), finish(bob)
    assert "alice heard bob: hi back" in heard_by_alice
    assert "bob heard alice: hi back" in heard_by_bob


def test_every_example_is_run_by_a_test() -> None:
    """examples/ is what the docs include and point to: each program there is run by
    a test (this module, or the recipe tests of the web and Prometheus pages)."""
    tests = Path(__file__).parent
    runners = [tests / "test_examples.py", *tests.glob("test_*_recipe.py")]
    named = "\n".join(path.read_text() for path in runners)
    unrun = [
        path.name
        for path in sorted(EXAMPLES.glob("*.py"))
        if path.name not in named and f"examples.{path.stem}" not in named
    ]
    assert unrun == []
