"""Helpers for testing code that uses tidings, and a pytest plugin.

`settle()` makes tests deterministic without sleeps:

```python
async def test_orders(tidings_store):
    seen = []
    async with tidings.Channels(tidings_store) as channels:
        await channels.register("orders", "*", lambda ch, ev, data: seen.append(data))
        await channels.publish("orders", "created", 1)
        await tidings.testing.settle(channels)
        assert seen == [1]
```

The pytest plugin (loaded by the ``pytest11`` entry point once tidings is installed)
offers two fixtures:

- ``tidings_store``: a ``memory://`` store with a hub of its own, per test;
- ``redis_server``: a factory that starts a private ``redis-server`` on a free port
  (``server = redis_server()``; ``server.url``, ``server.kill()``,
  ``server.restart()``...), every one of them stopped after the test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._runtime.lifecycle import runtime_of
from .brokers.memory import Hub, MemoryBroker
from .channels import Channels
from .pubsub import PubSub
from .store import Store

__all__ = ["RedisServer", "free_port", "memory_store", "settle"]

_hubs = itertools.count(1)


async def settle(handler: Channels | PubSub) -> None:
    """Return once every message published so far has been dispatched.

    "So far": every publish that returned before this call (on ``memory://``, and on
    Redis for publishes through any connection whose reply came back), and the
    messages the callbacks published meanwhile, until none is left. It proves the
    subscriber has received everything sent before (a round trip on its connection),
    then waits until every channel's actor has handled what it was given: its
    callbacks returned (async ones too), its iterators were fed.

    It waits as long as that takes: a callback that never returns makes it wait
    forever, so bound it (``with anyio.fail_after(5): await settle(channels)``).
    While disconnected it cannot prove the broker's side: it returns once what was
    received is dispatched.

    Consumer groups too: for each group the handler is a member of, it waits until
    every entry in the group's log when it was called has been acknowledged,
    dead-lettered, or is waiting out a retry delay (asking the broker, a few
    milliseconds apart).

    Raises:
        RuntimeError: the handler is not running.
    """
    await runtime_of(handler).settle()


def memory_store() -> Store:
    """A ``memory://`` store with a hub of its own (no other store shares it)."""
    return Store(MemoryBroker(Hub(f"test-{next(_hubs)}")))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` process on a free port, in a directory of its own.

    ``args`` go to ``redis-server`` as they are (``"--appendonly", "yes"``). It is
    started at once; `kill()` (``kill -9``), `start()`, `restart()`,
    `pause()` (SIGSTOP) and `resume()` inject faults; `close()` stops it
    and removes its directory.

    Raises:
        RuntimeError: no ``redis-server`` on the PATH, or it did not start.
    """

    def __init__(self, *args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (it is not on the PATH)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-redis-"))
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def command(self) -> list[str]:
        """The ``redis-server`` command line (a subclass may add to it)."""
        return [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.dir)),
            *("--daemonize", "no", "--loglevel", "warning"),
            *self.args,
        ]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (again, on the same port and directory: its AOF or RDB, if
        enabled, is read back)."""
        log = (self.dir / "redis.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
            time.sleep(0.01)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """``kill -9``: its connections die without a goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """`kill()`, then `start()`."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: it keeps its connections open and answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT, after `pause()`."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop it for good and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {'running' if self.process else 'stopped'}>"


# -- the pytest plugin ----------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - tidings runs without pytest
    pass
else:

    @pytest.fixture
    def tidings_store() -> Store:
        """A ``memory://`` store with a hub of its own, for one test."""
        return memory_store()

    @pytest.fixture
    def redis_server() -> Iterator[Callable[..., RedisServer]]:
        """A factory of private ``redis-server`` processes (``redis_server()``, or
        ``redis_server("--appendonly", "yes")``), all stopped after the test."""
        started: list[RedisServer] = []

        def start(*args: str, **kwargs: Any) -> RedisServer:
            server = RedisServer(*args, **kwargs)
            started.append(server)
            return server

        yield start
        for server in started:
            server.close()
