"""Soak test: minutes of steady traffic through tidings against a private redis-server.

``make soak`` (or ``python -m bench.soak --minutes 3``) starts a ``redis-server`` on a
free port and, in this one process, runs two :class:`tidings.Channels` handlers on it:

- the **consumer**: one counting callback on each of 100 permanent channels
  (``soak:c0`` .. ``soak:c99``), plus a churn task that keeps registering and
  unregistering an extra callback on random permanent channels and on 20 churn-only
  channels (``soak:x0`` .. ``soak:x19``, subscribed and unsubscribed as it goes); it
  also publishes a little itself (``--side-rate``: tracked messages on the permanent
  channels, and noise on the churn channels);
- the **publisher**: no registrations at all, only publishing (``--rate`` messages per
  second spread over the 100 permanent channels by ``--workers`` tasks).

Each tracked message carries ``{"p": publisher, "c": channel, "s": sequence}``. Both
handlers use a short ``--health-check`` interval so idle health checks happen many
times, and a callback on each handler's status channel counts its transitions.

How to read the output. Every ``--interval`` seconds (60; shorter when the run is
shorter than two intervals), and once at the end, a line::

    [ 1:00] published 121,000  received 121,300  lost 0  reconnects 0/0  errors 0
            RSS 48.1 MiB (+0.12 MiB/min)  CPU 41.2 us/msg

- ``published``: publishes acknowledged by Redis (both handlers);
- ``received``: messages the consumer read from Redis (``stats().received``);
- ``lost``: tracked messages acknowledged by Redis that never reached their callback.
  Only messages published while both handlers were connected count: a message is
  left out when either handler was not connected, or changed status, while it was
  published, and when the consumer disconnected any time after it was published and
  before it was checked. A message is checked 5 s after its acknowledgement during
  the run, and ``--settle`` seconds after the last publish at the end;
- ``reconnects``: ``stats().reconnects`` of consumer / publisher;
- ``errors``: publishes that raised :class:`tidings.PublishError`;
- ``RSS``: the process's resident memory (``VmRSS``), and its growth per minute over
  the interval: after the first interval (warm-up) it should stay near zero;
- ``CPU``: process CPU seconds over the interval divided by the messages received in it
  (everything in the process counts: both handlers, the publishers, this bookkeeping).

The summary then gives lost / reconnects / publish errors, RSS growth and CPU per
message early (first interval) versus late (last interval), further checks (order
per channel and publisher, misrouted messages, publishes that reached no subscriber
while connected), the raw ``stats()`` of both handlers, and the accounting identity
of the consumer: every received message is exactly one of reached a callback,
dropped, unrouted or decode error. ``delivered`` counts callback *calls* (a message
reaching two callbacks counts twice, status events count too), so the soak counts
the messages that reached a callback itself and prints both.

With ``--strict`` (the default) the exit code is 1 when anything was lost, a handler
reconnected, or a publish failed; ``--no-strict`` reports without failing. The
redis-server is always stopped.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

import tidings
from tests.redis_server import RedisServer

NAMESPACE = "soak"
PERMANENT = 100  # channels c0..c99: always subscribed, traffic tracked
CHURN = 20  # channels x0..x19: subscribed and dropped all the time
NAMES = tuple(f"c{i}" for i in range(PERMANENT))
CHURN_NAMES = tuple(f"x{i}" for i in range(CHURN))
MAIN, SIDE = 0, 1  # publisher ids: the publish-only handler, the consumer's own publisher
CHECK_AFTER = 5.0  # seconds after its acknowledgement a message is checked, during the run
ORPHAN_AFTER = 30.0  # an arrival matching no publish for this long is an orphan
MAX_LOST_KEYS = 100_000  # lost keys remembered, to recognise late arrivals


def rss_mib() -> float:
    """The resident set size of this process in MiB (NaN where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes:2d}:{rest:02d}"


class Ledger:
    """Which tracked messages were acknowledged, which arrived, which are lost.

    Memory stays bounded: acknowledged messages wait at most ``CHECK_AFTER`` seconds
    to be checked, arrivals are forgotten once matched (or as orphans).
    """

    def __init__(self) -> None:
        # (acknowledged at, published at, key, counts if lost), in acknowledgement order.
        self.pending: collections.deque[tuple[float, float, int, bool]] = collections.deque()
        self.arrived: dict[int, float] = {}  # key -> arrival time, until matched
        self.last_seq = [-1] * (2 * PERMANENT)  # per (publisher, channel)
        self.lost_keys: set[int] = set()
        self.tracked = 0  # tracked publishes acknowledged
        self.matched = 0
        self.lost = 0
        self.excused = 0  # not arrived, but published around a disconnect: not counted
        self.late = 0  # arrived after being counted lost (then no longer counted lost)
        self.orphans = 0  # arrived, matching no acknowledged publish
        self.out_of_order = 0  # a sequence number not above the last one (or a repeat)
        self.misrouted = 0
        self.malformed = 0
        self.calls = 0  # calls of the counting callback
        self.per_channel = [0] * PERMANENT
        self._next_orphan_scan = 0.0

    @staticmethod
    def key(publisher: int, seq: int) -> int:
        return seq * 2 + publisher

    def acknowledged(self, key: int, published_at: float, counts: bool) -> None:
        self.tracked += 1
        self.pending.append((time.monotonic(), published_at, key, counts))

    def on_tick(self, channel: tidings.Channel, event: str, data: Any) -> None:
        """The counting callback of the permanent channels."""
        self.calls += 1
        try:
            publisher, index, seq = data["p"], data["c"], data["s"]
            expected = NAMES[index]
        except (KeyError, TypeError, IndexError):
            self.malformed += 1
            return
        if channel.name != expected:
            self.misrouted += 1
        self.per_channel[index] += 1
        slot = publisher * PERMANENT + index
        if seq <= self.last_seq[slot]:
            self.out_of_order += 1
        else:
            self.last_seq[slot] = seq
        key = self.key(publisher, seq)
        if key in self.lost_keys:
            self.lost_keys.discard(key)
            self.lost -= 1
            self.late += 1
            return
        self.arrived[key] = time.monotonic()

    def check(self, older_than: float, consumer_down_at: float) -> None:
        """Match acknowledged messages older than ``older_than`` with arrivals."""
        pending, arrived = self.pending, self.arrived
        while pending and pending[0][0] <= older_than:
            _, published_at, key, counts = pending.popleft()
            if arrived.pop(key, None) is not None:
                self.matched += 1
            elif counts and consumer_down_at < published_at:
                self.lost += 1
                if len(self.lost_keys) < MAX_LOST_KEYS:
                    self.lost_keys.add(key)
            else:
                self.excused += 1
        now = time.monotonic()
        if now >= self._next_orphan_scan:
            self._next_orphan_scan = now + 10.0
            cutoff = now - ORPHAN_AFTER
            for key in [k for k, at in arrived.items() if at <= cutoff]:
                del arrived[key]
                self.orphans += 1


class Watch:
    """Counts the status events of one handler (a callback on its status channel)."""

    def __init__(self, name: str, epoch: list[int]) -> None:
        self.name = name
        self.events: collections.Counter[str] = collections.Counter()
        self.down_at = -math.inf  # when it last disconnected (monotonic)
        self._epoch = epoch  # shared: bumped by every status event of either handler

    def on_status(self, channel: tidings.Channel, event: str, data: Any) -> None:
        self.events[event] += 1
        self._epoch[0] += 1
        if event == "disconnected":
            self.down_at = time.monotonic()


@dataclass
class Row:
    elapsed: float
    published: int
    received: int
    lost: int
    reconnects: tuple[int, int]
    errors: int
    rss: float
    rss_per_min: float
    cpu_per_msg: float | None


class Soak:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.seconds = args.minutes * 60
        interval = float(args.interval)
        if self.seconds < 2 * interval:
            interval = self.seconds / 3  # a short run still shows early versus late
        self.interval = interval
        options: dict[str, Any] = {"health_check_interval": args.health_check}
        self.consumer = tidings.Channels(
            f"{url}/0?client_name=soak-consumer", namespace=NAMESPACE, **options
        )
        self.publisher = tidings.Channels(
            f"{url}/0?client_name=soak-publisher", namespace=NAMESPACE, **options
        )
        self.epoch = [0]
        self.watches = (Watch("consumer", self.epoch), Watch("publisher", self.epoch))
        self.ledger = Ledger()
        self.rng = random.Random(args.seed)
        self.stop: anyio.Event | None = None  # made in run(): events need the event loop
        self.seq = [0, 0]  # next sequence number per publisher
        self.published = 0  # publishes acknowledged, tracked or not
        self.publish_errors = 0
        self.zero_receivers = 0  # tracked publishes Redis delivered to nobody, while connected
        self.churn_ops = 0
        self.churn_subscribes = 0
        self.extra_calls = 0
        self.churn_calls = 0
        self.rows: list[Row] = []
        self._mark = (0.0, 0, 0.0, 0.0)  # elapsed, received, cpu, rss at the last row

    # -- callbacks ----------------------------------------------------------------------

    def on_extra(self, channel: tidings.Channel, event: str, data: Any) -> None:
        self.extra_calls += 1

    def on_churn(self, channel: tidings.Channel, event: str, data: Any) -> None:
        self.churn_calls += 1

    # -- traffic --------------------------------------------------------------------------

    def both_connected(self) -> bool:
        connected = tidings.StatusType.connected
        return self.consumer.status is connected and self.publisher.status is connected

    async def publish_tracked(self, handler: tidings.Channels, publisher: int, index: int) -> None:
        seq = self.seq[publisher]
        self.seq[publisher] = seq + 1
        key = Ledger.key(publisher, seq)
        started, epoch = time.monotonic(), self.epoch[0]
        counts = self.both_connected()
        try:
            receivers = await handler.publish(
                NAMES[index], "tick", {"p": publisher, "c": index, "s": seq}
            )
        except tidings.PublishError:
            self.publish_errors += 1
            self.ledger.acknowledged(key, started, False)  # it may have got through
            return
        counts = counts and self.both_connected() and epoch == self.epoch[0]
        self.published += 1
        self.ledger.acknowledged(key, started, counts)
        if counts and receivers == 0:
            self.zero_receivers += 1

    async def paced(self, rate: float, step: Callable[[int], Awaitable[None]]) -> None:
        """Call ``await step(n)`` for n = 0, 1, ... at ``rate`` per second until stopped."""
        assert self.stop is not None
        period = 1 / rate
        next_at = time.monotonic()
        n = 0
        while not self.stop.is_set():
            await step(n)
            n += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            elif delay < -1.0:  # stalled (a long publish): resume the pace, no burst
                next_at = time.monotonic()
            else:
                await anyio.lowlevel.checkpoint()

    async def main_worker(self, worker: int) -> None:
        """One of the publish-only handler's tasks: its share of the channels, in turn."""
        mine = [i for i in range(PERMANENT) if i % self.args.workers == worker]

        async def step(n: int) -> None:
            await self.publish_tracked(self.publisher, MAIN, mine[n % len(mine)])

        await self.paced(self.args.rate / self.args.workers, step)

    async def side_publisher(self) -> None:
        """The consumer's own publishes: tracked ones, and every 5th also noise on x*."""

        async def step(n: int) -> None:
            await self.publish_tracked(self.consumer, SIDE, n % PERMANENT)
            if n % 5 == 0:
                try:
                    await self.consumer.publish(self.rng.choice(CHURN_NAMES), "noise", {"n": n})
                except tidings.PublishError:
                    self.publish_errors += 1
                else:
                    self.published += 1

        await self.paced(self.args.side_rate, step)

    async def churn(self) -> None:
        """Register and unregister extra callbacks, subscribing and dropping channels."""
        extras: set[int] = set()
        churning: set[int] = set()
        rng = self.rng

        async def toggle(
            members: set[int], names: Sequence[str], index: int, callback: Callable[..., Any]
        ) -> None:
            if index in members:
                members.discard(index)
                await self.consumer.unregister(names[index], "*", callback)
            else:
                members.add(index)
                await self.consumer.register(names[index], "*", callback)

        async def step(n: int) -> None:
            if rng.random() < 0.5:
                await toggle(extras, NAMES, rng.randrange(PERMANENT), self.on_extra)
            else:
                index = rng.randrange(CHURN)
                self.churn_subscribes += index not in churning
                await toggle(churning, CHURN_NAMES, index, self.on_churn)
            self.churn_ops += 1

        await self.paced(self.args.churn_rate, step)

    async def checker(self) -> None:
        while True:
            await anyio.sleep(1.0)
            self.ledger.check(time.monotonic() - CHECK_AFTER, self.watches[0].down_at)

    # -- reporting ------------------------------------------------------------------------

    def row(self, started: float) -> Row:
        elapsed = time.monotonic() - started
        received = self.consumer.stats().received
        cpu, rss = time.process_time(), rss_mib()
        last_elapsed, last_received, last_cpu, last_rss = self._mark
        minutes = (elapsed - last_elapsed) / 60
        messages = received - last_received
        row = Row(
            elapsed=elapsed,
            published=self.published,
            received=received,
            lost=self.ledger.lost,
            reconnects=(self.consumer.stats().reconnects, self.publisher.stats().reconnects),
            errors=self.publish_errors,
            rss=rss,
            rss_per_min=(rss - last_rss) / minutes if minutes > 0 else math.nan,
            cpu_per_msg=(cpu - last_cpu) / messages if messages > 0 else None,
        )
        self._mark = (elapsed, received, cpu, rss)
        self.rows.append(row)
        cpu_text = "n/a" if row.cpu_per_msg is None else f"{row.cpu_per_msg * 1e6:.1f} us/msg"
        print(
            f"[{clock(row.elapsed)}] published {row.published:,}  received {row.received:,}  "
            f"lost {row.lost:,}  reconnects {row.reconnects[0]}/{row.reconnects[1]}  "
            f"errors {row.errors:,}  RSS {row.rss:.1f} MiB ({row.rss_per_min:+.2f} MiB/min)  "
            f"CPU {cpu_text}",
            flush=True,
        )
        return row

    async def run(self) -> int:
        args = self.args
        self.stop = anyio.Event()
        for handler, watch in zip((self.consumer, self.publisher), self.watches, strict=True):
            await handler.register(handler.status_channel.name, "*", watch.on_status)
        async with self.consumer, self.publisher:
            with anyio.fail_after(30):
                await self.consumer.connect()
                await self.publisher.connect()
                for name in NAMES:
                    await self.consumer.register(name, "tick", self.ledger.on_tick)
            started = time.monotonic()
            self._mark = (0.0, self.consumer.stats().received, time.process_time(), rss_mib())
            print(
                f"soak: {args.minutes:g} min on {args.backend}, "
                f"{args.rate:g} msg/s from the publish-only handler ({args.workers} tasks) + "
                f"{args.side_rate:g} msg/s from the consumer, {PERMANENT} channels, "
                f"churn {args.churn_rate:g} ops/s over them and {CHURN} more, health check "
                f"every {args.health_check:g} s, report every {self.interval:g} s, "
                f"seed {args.seed}, RSS {self._mark[3]:.1f} MiB at start",
                flush=True,
            )
            async with anyio.create_task_group() as background:
                background.start_soon(self.checker)
                async with anyio.create_task_group() as traffic:
                    for worker in range(args.workers):
                        traffic.start_soon(self.main_worker, worker)
                    traffic.start_soon(self.side_publisher)
                    traffic.start_soon(self.churn)
                    intervals = max(1, math.ceil(self.seconds / self.interval - 1e-9))
                    for k in range(1, intervals):
                        await anyio.sleep(max(0.0, started + k * self.interval - time.monotonic()))
                        self.row(started)
                    await anyio.sleep(max(0.0, started + self.seconds - time.monotonic()))
                    self.stop.set()  # the traffic tasks finish their step and return
                await anyio.sleep(args.settle)
                background.cancel_scope.cancel()
            self.ledger.check(math.inf, self.watches[0].down_at)
            self.row(started)
            return self.summary()

    def summary(self) -> int:
        ledger, rows = self.ledger, self.rows
        consumer, publisher = self.consumer.stats(), self.publisher.stats()
        reconnects = consumer.reconnects + publisher.reconnects
        down = (self.watches[0].events["disconnected"], self.watches[1].events["disconnected"])
        early, late = rows[0], rows[-1]
        steady = (
            (late.rss - early.rss) / ((late.elapsed - early.elapsed) / 60)
            if len(rows) > 1
            else math.nan
        )

        def per_msg(row: Row) -> str:
            return "n/a" if row.cpu_per_msg is None else f"{row.cpu_per_msg * 1e6:.1f} us"

        reached = ledger.calls + self.churn_calls
        accounted = reached + consumer.dropped + consumer.unrouted + consumer.decode_errors
        status_calls = sum(sum(w.events.values()) for w in self.watches)
        calls = ledger.calls + self.extra_calls + self.churn_calls
        minutes = late.elapsed / 60
        print(
            f"\nsummary after {minutes:.2f} min ({late.published / late.elapsed:,.0f} msg/s "
            f"published on average)"
        )
        print(
            f"  lost while connected   {ledger.lost:,}  (of {ledger.tracked:,} tracked; "
            f"{ledger.matched:,} arrived; {ledger.excused:,} not arrived but published around "
            f"a disconnect, not counted; {ledger.late:,} arrived late)"
        )
        print(
            f"  reconnects             consumer {consumer.reconnects}, publisher "
            f"{publisher.reconnects}  (disconnected events {down[0]} / {down[1]})"
        )
        print(f"  publish errors         {self.publish_errors:,}")
        print(
            f"  RSS growth per minute  early {early.rss_per_min:+.2f} MiB/min (first interval), "
            f"late {late.rss_per_min:+.2f} MiB/min (last interval), "
            f"{steady:+.2f} MiB/min after the first interval; {late.rss:.1f} MiB at the end"
        )
        print(f"  CPU per message        early {per_msg(early)}, late {per_msg(late)}")
        print(
            f"  other checks           out of order {ledger.out_of_order}, misrouted "
            f"{ledger.misrouted}, malformed {ledger.malformed}, orphan arrivals "
            f"{ledger.orphans}, tracked publishes that reached no subscriber while connected "
            f"{self.zero_receivers}"
        )
        print(
            f"  churn                  {self.churn_ops:,} register/unregister calls, "
            f"{self.churn_subscribes:,} churn-channel subscriptions"
        )
        print(f"  consumer  {consumer}")
        print(f"  publisher {publisher}")
        print(
            f"identity: received={consumer.received} delivered={consumer.delivered} "
            f"dropped={consumer.dropped} unrouted={consumer.unrouted} "
            f"decode_errors={consumer.decode_errors}"
        )
        verdict = "holds" if accounted == consumer.received else "OFF BY "
        if accounted != consumer.received:
            verdict += f"{consumer.received - accounted:+,}"
        print(
            f"  reached a callback {reached:,} (counting callback {ledger.calls:,} + churn "
            f"channels {self.churn_calls:,}) + dropped + unrouted + decode_errors = "
            f"{accounted:,} vs received {consumer.received:,}: {verdict}"
        )
        print(
            f"  callback calls seen {calls:,} (counting {ledger.calls:,} + extra "
            f"{self.extra_calls:,} + churn {self.churn_calls:,}) + status events "
            f"{status_calls:,} vs delivered {consumer.delivered + publisher.delivered:,} "
            f"(both handlers)"
        )
        problems = []
        if ledger.lost:
            problems.append(f"lost {ledger.lost}")
        if reconnects:
            problems.append(f"reconnects {consumer.reconnects}/{publisher.reconnects}")
        if self.publish_errors:
            problems.append(f"publish errors {self.publish_errors}")
        if ledger.matched == 0:
            print("result: FAIL (no tracked message arrived at all)")
            return 1
        if not problems:
            print("result: PASS")
            return 0
        if self.args.strict:
            print(f"result: FAIL ({', '.join(problems)})")
            return 1
        print(f"result: not clean ({', '.join(problems)}), but --no-strict")
        return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak tidings with steady traffic against a private redis-server.",
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="duration (default 3)")
    parser.add_argument("--backend", choices=("trio", "asyncio"), default="trio")
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="msg/s from the publish-only handler"
    )
    parser.add_argument("--workers", type=int, default=4, help="its publishing tasks")
    parser.add_argument(
        "--side-rate", type=float, default=100.0, help="tracked msg/s from the consumer itself"
    )
    parser.add_argument(
        "--churn-rate", type=float, default=50.0, help="register/unregister calls per second"
    )
    parser.add_argument(
        "--health-check", type=float, default=2.0, help="health_check_interval of both (s)"
    )
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between lines")
    parser.add_argument("--settle", type=float, default=1.0, help="wait after the last publish (s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the churn (random)")
    parser.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit 1 on any loss, reconnect or publish error (default on)",
    )
    parser.add_argument("--log-level", default="WARNING", help="of the tidings logger")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.side_rate <= 0 or args.churn_rate <= 0:
        parser.error("--minutes and the rates must be > 0")
    if not 1 <= args.workers <= PERMANENT:
        parser.error(f"--workers must be 1..{PERMANENT}")
    if args.seed is None:
        args.seed = random.randrange(2**32)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = RedisServer()
    try:
        soak = Soak(args, server.url)
        code: int = anyio.run(soak.run, backend=args.backend)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
