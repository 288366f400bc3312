"""The ``tidings`` command in a subprocess whose output lines the tests wait for.

Each output stream is read by a thread into a queue, so a test waits for the next
line with a bound (``line(timeout=...)``) instead of a read that could block forever,
and never sleeps hoping something happened.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import anyio

import tidings

#: Seconds a test waits for a line it expects, or for the process to end: generous
#: (a loaded machine), never a measure of speed.
PATIENCE = 20.0


def _interruptible() -> None:
    # A test suite started in the background (`make test &`, a CI runner) ignores
    # SIGINT, and a child inherits that: Ctrl-C would never reach it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """``python -m tidings ARGS``, started at once, its stdout and stderr read by lines."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        cwd: str | None = None,
        python: Sequence[str] = (),
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *python, "-m", "tidings", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_interruptible,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        #: Each stderr line with the time it was read (``time.monotonic()``).
        self.stamped: list[tuple[float, str]] = []
        self._lines: dict[str, queue.Queue[str | None]] = {}
        self._readers = [
            self._read(name, stream, into)
            for name, stream, into in (
                ("stdout", self.process.stdout, self.stdout),
                ("stderr", self.process.stderr, self.stderr),
            )
        ]

    def _read(self, name: str, stream: IO[str] | None, into: list[str]) -> threading.Thread:
        lines: queue.Queue[str | None] = queue.Queue()
        self._lines[name] = lines

        def read() -> None:
            assert stream is not None
            for line in stream:
                if name == "stderr":
                    self.stamped.append((time.monotonic(), line.rstrip("\n")))
                into.append(line.rstrip("\n"))
                lines.put(line.rstrip("\n"))
            lines.put(None)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def line(self, stream: str = "stdout", timeout: float = PATIENCE) -> str:
        """The next line of ``stream``, waiting up to ``timeout`` seconds for it."""
        try:
            line = self._lines[stream].get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no line on {stream} within {timeout}s; so far: {self.stdout} {self.stderr}"
            ) from None
        if line is None:
            self._lines[stream].put(None)  # (for the next caller too)
            raise AssertionError(
                f"{stream} ended (exit {self.process.poll()}): {self.stdout} {self.stderr}"
            )
        return line

    def until(self, wanted: Callable[[str], bool], stream: str = "stdout") -> str:
        """The first line of ``stream`` from now that is ``wanted``."""
        deadline = time.monotonic() + PATIENCE
        while not wanted(line := self.line(stream, max(deadline - time.monotonic(), 0.01))):
            pass
        return line

    def write(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = PATIENCE) -> int:
        """The exit code, once it has ended and its output has been read."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code

    @property
    def err(self) -> str:
        return "\n".join(self.stderr)

    def kill(self) -> None:
        """Stop it if it still runs (a failed test's clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()

    def __enter__(self) -> Command:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def publish(url: str, namespace: str, channel: str, *data: Any, durable: bool = True) -> None:
    """Publish events named "job" with ``data`` to a (durable) channel, in-process."""

    async def run() -> None:
        async with tidings.Channels(
            url, namespace=namespace, durable=[channel] if durable else None
        ) as channels:
            for item in data:
                await channels.publish(channel, "job", item)

    anyio.run(run, backend="trio")


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (a broker's state) until it holds, for a bounded time."""
    deadline = time.monotonic() + PATIENCE
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)
