"""Web fan-out: N Server-Sent Events clients on one app process, one broadcast to all.

Three processes per run, all on 127.0.0.1, beside the harness's private redis-server:

- the **server**, ``python -m bench.web serve SPEC``: one Starlette app under uvicorn
  (asyncio loop, h11: the same server settings for every contender) whose
  ``GET /events/chan`` streams the Redis channel ``bench:chan`` as SSE;
- the **clients**, ``python -m bench.web clients SPEC``: N raw asyncio sockets
  (`asyncio.Protocol`, no HTTP library), each holding one ``GET /events/chan``
  open, and the publisher (one raw RESP connection to Redis);
- the **driver** (`run_web`, in the harness's process): it reads the server's RSS
  and CPU time from ``/proc`` between the clients' steps.

The steps: one probe client connects, gets a broadcast and leaves (so that what the
first request loads lazily is not counted per client), then RSS with no client; N
clients connect (at most ``CONNECTING`` at a time), each waiting for its response's
first body bytes; broadcasts are published until every client has one (untimed: it
also proves every client subscribed); after a second of quiet, RSS again: memory per
client = (RSS with N idle clients - RSS with none) / N. Then ``broadcasts`` timed
broadcasts, one at a time (the next when every client has the last, or after
``BROADCAST_TIMEOUT`` s), each carrying ``time.time()`` at its publish; every client
notes ``time.time()`` when the read that completes the event returns, and latency =
receive - publish, over all clients and broadcasts. CPU of the server per delivery
is its CPU time over the timed broadcasts / (N x broadcasts).

Contenders (each the way its documentation shows a browser stream):

- ``tidings-asyncio``: `tidings.asgi.EventStream` mounted at ``/events``.
- ``broadcaster``: ``Broadcast("redis://...")`` (its Redis pub/sub backend, on
  redis-py's asyncio client) and a ``StreamingResponse`` per client iterating
  ``broadcast.subscribe("bench:chan")``.
- ``faststream``: one FastStream ``RedisBroker`` subscriber on ``bench:chan`` whose
  handler puts each message into every connected client's ``asyncio.Queue`` (the
  fan-out is the application's: FastStream has none); a ``StreamingResponse`` per
  client reads its queue.
- ``faststream-per-client``: a FastStream subscriber made per request
  (``broker.subscriber(..., persistent=False)``, started, iterated, stopped): its own
  redis-py ``PubSub`` and Redis connection per browser, so only the 1k case.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHANNEL = "bench:chan"  # the Redis channel: channel "chan" in namespace "bench"
PATH = "/events/chan"
#: Clients connecting at once (the listen backlog is 4096; beyond it SYNs are dropped
#: and retried a second later, which would time the kernel, not the app).
CONNECTING = 256
BROADCAST_TIMEOUT = 30.0
QUIET = 1.0  # seconds of quiet before each RSS reading

# -- the server process ----------------------------------------------------------------


def raise_nofile() -> int:
    """RLIMIT_NOFILE's soft limit up to its hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _sse_app(subscribe: Any, lifespan: Any) -> Any:
    """A Starlette app streaming ``subscribe()`` (an async context manager giving an
    async iterator of bytes: the SSE ``data:`` payloads) at PATH."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def events(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            async with subscribe() as messages:
                yield b": ok\n\n"  # as EventStream: the stream is open (and subscribed)
                async for message in messages:
                    yield b"data: " + message + b"\n\n"

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    return Starlette(routes=[Route(PATH, events)], lifespan=lifespan)


def app_tidings(url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    import tidings
    from tidings.asgi import EventStream

    channels = tidings.Channels(url, namespace="bench")
    stream = EventStream(channels, allow=["chan"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with channels:
            yield

    return Starlette(routes=[Mount("/events", stream)], lifespan=lifespan)


def app_broadcaster(url: str) -> Any:
    from broadcaster import Broadcast

    from bench.peers import broadcaster_subscribe

    broadcast = Broadcast(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # A subscriber held for the app's life: Broadcast.subscribe() awaits the
        # backend's SUBSCRIBE before it records the channel's first subscriber, so
        # clients arriving meanwhile each subscribe again and replace each other's
        # queue (they would never get an event). One standing subscriber avoids that.
        # (broadcaster_subscribe: its Redis backend delivers nothing with redis-py 8
        # otherwise; see bench/peers.py.)
        async with broadcast, broadcaster_subscribe(broadcast, CHANNEL):
            yield

    @contextlib.asynccontextmanager
    async def subscribe() -> AsyncIterator[AsyncIterator[bytes]]:
        async with broadcast.subscribe(CHANNEL) as subscriber:

            async def messages() -> AsyncIterator[bytes]:
                async for event in subscriber:
                    yield event.message.encode()

            yield messages()

    return _sse_app(subscribe, lifespan)


def app_faststream(url: str) -> Any:
    import logging

    from faststream.redis import RedisBroker
    from faststream.redis.annotations import RedisMessage

    broker = RedisBroker(url, log_level=logging.DEBUG)  # no INFO line per message
    queues: set[asyncio.Queue[bytes]] = set()

    async def on_message(message: Any) -> None:
        body = message.body  # as published (a typed argument would be decoded)
        for queue in queues:
            queue.put_nowait(body)

    # (FastStream reads the annotation; this module's are strings, so given here.)
    on_message.__annotations__ = {"message": RedisMessage, "return": None}
    broker.subscriber(CHANNEL)(on_message)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with broker:
            await broker.start()
            yield

    @contextlib.asynccontextmanager
    async def subscribe() -> AsyncIterator[AsyncIterator[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queues.add(queue)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            queues.discard(queue)

    return _sse_app(subscribe, lifespan)


def app_faststream_per_client(url: str) -> Any:
    import logging

    from faststream.redis import RedisBroker

    # A Redis connection per client: past redis-py's default pool of 100.
    broker = RedisBroker(url, log_level=logging.DEBUG, max_connections=100_000)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with broker:
            await broker.start()
            yield

    @contextlib.asynccontextmanager
    async def subscribe() -> AsyncIterator[AsyncIterator[bytes]]:
        subscriber = broker.subscriber(CHANNEL, persistent=False)
        await subscriber.start()

        async def messages() -> AsyncIterator[bytes]:
            async for message in subscriber:
                yield message.body

        try:
            yield messages()
        finally:
            await subscriber.stop()

    return _sse_app(subscribe, lifespan)


APPS = {
    "tidings-asyncio": app_tidings,
    "broadcaster": app_broadcaster,
    "faststream": app_faststream,
    "faststream-per-client": app_faststream_per_client,
}


def serve(spec: dict[str, Any]) -> None:
    """The server process: say ``{"skipped": ...}`` if the contender cannot be built
    here, else serve until killed."""
    raise_nofile()
    try:
        import uvicorn

        app = APPS[spec["contender"]](f"redis://127.0.0.1:{spec['port']}")
    except ImportError as exc:
        print(json.dumps({"skipped": f"cannot import what it needs: {exc}"}), flush=True)
        return
    sys.stdout.flush()
    os.dup2(2, 1)  # from here on, whatever prints goes where the logs go: nobody reads stdout
    _count_collections(Path(spec["gc_file"]))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=spec["http_port"],
        loop="asyncio",
        http="h11",
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


def _count_collections(path: Path) -> None:
    """Time the cyclic garbage collector's full (generation 2) collections; on
    SIGUSR1, write their count and seconds so far to ``path`` (the driver's view of
    what paused the server)."""
    state = {"full": 0, "seconds": 0.0, "started": 0.0}

    def on_collect(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            state["started"] = time.perf_counter()
        else:
            state["full"] += 1
            state["seconds"] += time.perf_counter() - state["started"]

    def write(signum: int, frame: Any) -> None:
        try:  # timers pending in the event loop (cancelled ones wait in its heap too)
            timers = len(asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]
        except (RuntimeError, AttributeError):
            timers = -1
        path.with_suffix(".tmp").write_text(json.dumps({**state, "timers": timers}))
        path.with_suffix(".tmp").replace(path)

    gc.callbacks.append(on_collect)
    signal.signal(signal.SIGUSR1, write)


# -- the clients' process ----------------------------------------------------------------

MARK = b'"b":'  # each broadcast's number, in its JSON


class Book:
    """What the clients got: per broadcast, how many clients have it, and when each
    got it."""

    def __init__(self, broadcasts: int) -> None:
        self.count = [0] * (broadcasts + 1)
        self.times: list[list[float]] = [[] for _ in range(broadcasts + 1)]
        self.wanted = 0  # clients that must have broadcast ``waiting``
        self.waiting = -1
        self.all_in: asyncio.Event = asyncio.Event()
        self.errors: list[str] = []
        self.closed = 0

    def got(self, number: int, at: float) -> None:
        self.count[number] += 1
        self.times[number].append(at)
        if number == self.waiting and self.count[number] >= self.wanted:
            self.all_in.set()


class Client(asyncio.Protocol):
    """One SSE client: sends its GET, then notes each broadcast's first arrival."""

    __slots__ = ("_request", "book", "buffer", "head", "opened", "seen", "transport")

    def __init__(self, book: Book, request: bytes) -> None:
        self.book = book
        self.buffer = b""
        self.head = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen = 0  # the numbers seen, as bits
        self.transport: asyncio.Transport | None = None
        self._request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer + data
        if not self.head:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            status = buffer[: buffer.find(b"\r\n")]
            if b" 200 " not in status:
                self.book.errors.append(status.decode("latin-1"))
                if not self.opened.done():
                    self.opened.set_exception(RuntimeError(status.decode("latin-1")))
                return
            self.head = True
            buffer = buffer[end + 4 :]
        if buffer and not self.opened.done():
            self.opened.set_result(None)  # the first body bytes: the stream is open
        while True:
            at = buffer.find(MARK)
            if at < 0:
                buffer = buffer[-(len(MARK) - 1) :]
                break
            start = end = at + len(MARK)
            while end < len(buffer) and 48 <= buffer[end] <= 57:
                end += 1
            if end == len(buffer):  # the number may go on in the next read
                buffer = buffer[at:]
                break
            number = int(buffer[start:end])
            bit = 1 << number
            if not self.seen & bit:
                self.seen |= bit
                self.book.got(number, now)
            buffer = buffer[end:]
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.book.closed += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the stream opened: {exc}"))


class Publisher:
    """PUBLISH over one raw RESP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        #: The stamp of each broadcast, by number (the first, if published again).
        self.stamps: dict[int, float] = {}

    @classmethod
    async def connect(cls, port: int) -> Publisher:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def publish(self, number: int) -> int:
        """Publish broadcast ``number``, stamped; returns Redis's receiver count."""
        data = {"b": number, "t": time.time()}
        self.stamps.setdefault(number, data["t"])
        payload = json.dumps(
            {"channel": "chan", "event": "tick", "data": data}, separators=(",", ":")
        ).encode()
        parts = [b"PUBLISH", CHANNEL.encode(), payload]
        command = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.writer.write(command)
        line = await self.reader.readline()
        if not line.startswith(b":"):
            raise RuntimeError(f"PUBLISH: {line!r}")
        return int(line[1:])


async def _open(book: Book, port: int, n: int, request: bytes) -> list[Client]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECTING)
    clients: list[Client] = []

    async def one() -> None:
        async with gate:
            _, client = await loop.create_connection(
                lambda: Client(book, request), "127.0.0.1", port
            )
            clients.append(client)
            await asyncio.wait_for(client.opened, 60)

    await asyncio.gather(*(one() for _ in range(n)))
    return clients


async def _until_all(
    book: Book, publisher: Publisher, number: int, wanted: int, again: float | None
) -> int:
    """Publish broadcast ``number`` (again every ``again`` s, if given) until ``wanted``
    clients have it or BROADCAST_TIMEOUT passes; returns the last receiver count."""
    book.waiting, book.wanted = number, wanted
    book.all_in = asyncio.Event()
    if book.count[number] >= wanted:
        return 0
    deadline = time.monotonic() + BROADCAST_TIMEOUT
    receivers = 0
    while time.monotonic() < deadline:
        receivers = await publisher.publish(number)
        wait = again if again is not None else deadline - time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(book.all_in.wait(), max(0.01, wait))
            break
        if again is None:
            break
    return receivers


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _step(word: str) -> None:
    """Wait for the driver's ``word`` on standard input."""
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != word:
        raise SystemExit(f"expected {word!r} from the driver, got {line!r}")


def _pick(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def clients(spec: dict[str, Any]) -> dict[str, Any]:
    raise_nofile()
    n, broadcasts = spec["n"], spec["broadcasts"]
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{spec['http_port']}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    publisher = await Publisher.connect(spec["port"])
    # The probe: one client gets one broadcast (number 0) and leaves.
    probe_book = Book(broadcasts)
    [probe] = await _open(probe_book, spec["http_port"], 1, request)
    await _until_all(probe_book, publisher, 0, 1, again=0.2)
    if probe_book.count[0] != 1:
        raise SystemExit("the probe client got no broadcast")
    assert probe.transport is not None
    probe.transport.close()
    _say("probed")
    await _step("connect")
    book = Book(broadcasts)
    started = time.perf_counter()
    conns = await _open(book, spec["http_port"], n, request)
    connect_s = time.perf_counter() - started
    _say("connected")
    await _step("warm")
    # Untimed: every client has a broadcast (number 0, published again every 3 s).
    started = time.perf_counter()
    receivers = await _until_all(book, publisher, 0, n, again=3.0)
    warm_s = time.perf_counter() - started
    if book.count[0] < n:
        raise SystemExit(f"only {book.count[0]} of {n} clients got the warm-up broadcast")
    _say("warm")
    await _step("time")
    latencies: list[float] = []
    spreads: list[float] = []
    rounds: list[list[float]] = []  # per broadcast: first, median, last arrival (ms)
    for number in range(1, broadcasts + 1):
        await asyncio.sleep(0.2)
        await _until_all(book, publisher, number, n, again=None)
        times = book.times[number]
        publish_at = publisher.stamps[number]
        latencies.extend(t - publish_at for t in times)
        if times:
            spreads.append(max(times) - min(times))
            ordered = sorted(times)
            rounds.append(
                [
                    round((t - publish_at) * 1e3, 1)
                    for t in (ordered[0], _pick(ordered, 0.5), ordered[-1])
                ]
            )
    _say("timed")
    await _step("close")
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    latencies.sort()
    expected = n * broadcasts
    return {
        "clients": n,
        "broadcasts": broadcasts,
        "events": len(latencies),
        "missing": expected - len(latencies),
        "p50_ms": _pick(latencies, 0.50) * 1e3 if latencies else None,
        "p99_ms": _pick(latencies, 0.99) * 1e3 if latencies else None,
        "max_ms": latencies[-1] * 1e3 if latencies else None,
        "spread_ms": max(spreads) * 1e3 if spreads else None,
        "first_ms": statistics.median(r[0] for r in rounds) if rounds else None,
        "rounds_ms": rounds,
        "connect_s": connect_s,
        "warm_s": warm_s,
        "redis_receivers": receivers,
        "closed_early": book.closed,
        "http_errors": len(book.errors),
    }


# -- the driver (in the harness's process) ---------------------------------------------------


def _stat(pid: int) -> tuple[int, float]:
    """RSS in bytes and CPU seconds (user + system) of a process, from /proc."""
    with open(f"/proc/{pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def _wait_port(port: int, server: subprocess.Popen[str], timeout: float = 30) -> str | None:
    """Wait until ``port`` accepts; the server's line if it exited first (a skip)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            assert server.stdout is not None
            return server.stdout.readline().strip() or f"exited with {server.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return None
        time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on {port} within {timeout:g} s")


def _collections(server: subprocess.Popen[str], path: Path) -> dict[str, float]:
    """The server's full collections so far (see `_count_collections`)."""
    path.unlink(missing_ok=True)
    server.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not report its collections")
        time.sleep(0.01)
    return dict(json.loads(path.read_text()))


def _line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        line = process.stdout.readline()
    finally:
        timer.cancel()
    if not line:
        raise RuntimeError(f"the clients' process ended (code {process.wait()})")
    return line.strip()


def _tell(process: subprocess.Popen[str], word: str) -> None:
    assert process.stdin is not None
    process.stdin.write(word + "\n")
    process.stdin.flush()


def run_web(
    spec: dict[str, Any], cwd: Path, env: dict[str, str] | None, log: Path | None = None
) -> dict[str, Any]:
    """One run: the server and the clients' processes, the server's RSS and CPU read
    between the clients' steps. ``cwd`` and ``env`` place the server (a baseline tree
    runs its own tidings); the clients need nothing of tidings."""
    from tidings.testing import free_port

    raise_nofile()  # inherited by both children
    scratch = Path(tempfile.mkdtemp(prefix="bench-web-"))
    gc_file = scratch / "collections.json"
    spec = {
        **spec,
        "http_port": free_port(),
        "broadcasts": spec.get("broadcasts", 5),
        "gc_file": str(gc_file),
    }
    errors = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.web", "serve", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=cwd,
        env=env,
    )
    client: subprocess.Popen[str] | None = None
    try:
        skipped = _wait_port(spec["http_port"], server)
        if skipped is not None:
            try:
                return dict(json.loads(skipped))
            except ValueError:
                raise RuntimeError(f"the server: {skipped}") from None
        here = Path(__file__).resolve().parent.parent
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.web", "clients", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=here,
        )
        timeout = 120 + spec["n"] / 50
        steps: dict[str, tuple[int, float]] = {}
        for word, reply in (("connect", "probed"), ("warm", "connected"), ("time", "warm")):
            line = _line(client, timeout)
            if line != reply:
                raise RuntimeError(f"the clients said {line!r}, not {reply!r}")
            time.sleep(QUIET)
            steps[reply] = _stat(server.pid)
            if reply == "warm":
                collected = _collections(server, gc_file)
            _tell(client, word)
        line = _line(client, timeout)
        if line != "timed":
            raise RuntimeError(f"the clients said {line!r}, not 'timed'")
        steps["timed"] = _stat(server.pid)
        collections = _collections(server, gc_file)
        _tell(client, "close")
        result: dict[str, Any] = json.loads(_line(client, timeout))
    finally:
        for process in (client, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if errors is not subprocess.DEVNULL:
            errors.close()
        shutil.rmtree(scratch, ignore_errors=True)
    n = spec["n"]
    base, connected, idle = steps["probed"][0], steps["connected"][0], steps["warm"][0]
    result.update(
        rss_base_mb=base / 2**20,
        rss_idle_mb=idle / 2**20,
        rss_after_mb=steps["timed"][0] / 2**20,
        # The metric: N idle clients that each had one event, against none.
        rss_per_client_kib=(idle - base) / n / 1024,
        rss_per_client_connected_kib=(connected - base) / n / 1024,
        cpu_us_per_msg=(steps["timed"][1] - steps["warm"][1]) * 1e6 / max(1, result["events"]),
        # The server's full garbage collections during the timed broadcasts.
        gc_full=collections["full"] - collected["full"],
        gc_full_ms=(collections["seconds"] - collected["seconds"]) * 1e3,
        timers_idle=collected["timers"],
        timers_after=collections["timers"],
    )
    return result


def detail(values: dict[str, Any]) -> str:
    """What the harness's table shows beside the p99."""
    text = (
        f"p50 {values['p50_ms']:.1f} ms, max {values['max_ms']:.1f} ms; "
        f"RSS {values['rss_per_client_kib']:.1f} KiB/client "
        f"({values['rss_base_mb']:.0f} -> {values['rss_idle_mb']:.0f} MB); "
        f"connect {values['connect_s']:.1f} s; Redis subscribers {values['redis_receivers']:,.0f}"
    )
    if values.get("gc_full"):
        text += f"; {values['gc_full']:.0f} full GC ({values['gc_full_ms']:.0f} ms)"
    if values.get("missing"):
        text += f"; MISSING {values['missing']:,.0f}"
    return text


def main() -> None:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    if role == "serve":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        serve(spec)
    elif role == "clients":
        result = asyncio.run(clients(spec))
        _say(json.dumps(result))
    else:
        raise SystemExit(f"python -m bench.web serve|clients SPEC, not {role!r}")


if __name__ == "__main__":
    main()
