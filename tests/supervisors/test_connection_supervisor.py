"""The connection supervisor alone, over a stub broker that records and refuses."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

import tidings
from tests.helpers import FAST, eventually
from tidings import ReplyError
from tidings.brokers.base import Broker, Claimed, Deliver, Entry, Publisher, Subscriber
from tidings.policies.status import StatusType
from tidings.policies.streams import Retention
from tidings.stats import Counters
from tidings.supervisors.connection import ConnectionSupervisor
from tidings.testing import free_port

pytestmark = pytest.mark.anyio


class StubSubscriber(Subscriber):
    def __init__(self, broker: StubBroker) -> None:
        self.broker = broker
        self.gone = anyio.Event()

    async def run(self, deliver: Deliver) -> None:
        await self.gone.wait()
        raise anyio.BrokenResourceError("the stub hung up")

    async def _command(self, kind: str, names: Sequence[str]) -> None:
        self.broker.commands.append((kind, tuple(names)))
        await checkpoint()
        if self.broker.frozen:
            await anyio.sleep_forever()
        if kind == "subscribe" and self.broker.refused.intersection(names):
            raise ReplyError("stub: NOPERM no", "NOPERM")

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self._command("subscribe", channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self._command("unsubscribe", channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        await self._command("psubscribe", patterns)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        await self._command("punsubscribe", patterns)

    async def barrier(self, on_answer: Callable[[], None]) -> None:
        self.broker.commands.append(("barrier", ()))
        await checkpoint()
        on_answer()

    async def aclose(self) -> None:
        self.gone.set()


class StubPublisher(Publisher):
    async def run(self) -> None:
        await anyio.sleep_forever()

    async def publish(self, channel: str, payload: bytes) -> int:
        await checkpoint()
        return 0

    async def append(self, channel: str, payload: bytes, retention: Retention) -> tuple[str, int]:
        await checkpoint()
        return "1-0", 0

    async def read(self, channel: str, start: str, count: int) -> list[Entry]:
        await checkpoint()
        return []

    async def tail(self, channel: str) -> str | None:
        await checkpoint()
        return None

    async def load_position(self, channel: str, consumer: str) -> str | None:
        await checkpoint()
        return None

    async def save_position(self, channel: str, consumer: str, entry_id: str) -> None:
        await checkpoint()

    # The supervisor never calls the consumer-group commands.

    async def group_create(self, channel: str, group: str, start: str) -> bool:
        raise NotImplementedError

    async def group_read(self, channel: str, group: str, consumer: str, count: int) -> list[Entry]:
        raise NotImplementedError

    async def group_claim(
        self, channel: str, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> Claimed:
        raise NotImplementedError

    async def group_ack(self, channel: str, group: str, ids: Sequence[str]) -> int:
        raise NotImplementedError

    async def group_release(
        self, channel: str, group: str, consumer: str, jobs: Sequence[tuple[str, int]], idle: float
    ) -> None:
        raise NotImplementedError

    async def group_leave(self, channel: str, group: str, consumer: str) -> bool:
        raise NotImplementedError

    async def group_prune(self, channel: str, group: str, idle: float, keep: str) -> int:
        raise NotImplementedError

    async def group_retry(
        self, channel: str, group: str, entry_id: str, payload: bytes, delay: float
    ) -> None:
        raise NotImplementedError

    async def group_due(
        self, channel: str, group: str, count: int, retention: Retention
    ) -> tuple[int, float | None]:
        raise NotImplementedError

    async def read_dead(self, channel: str, count: int, start: str = "+") -> list[Any]:
        raise NotImplementedError

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        raise NotImplementedError

    async def stream_info(self, key: str) -> Any:
        raise NotImplementedError

    async def group_info(self, channel: str) -> list[Any]:
        raise NotImplementedError

    async def scan_streams(self, match: str) -> list[str]:
        raise NotImplementedError

    async def add_dead(
        self, channel: str, fields: Sequence[tuple[str, bytes]], retention: Retention
    ) -> str:
        raise NotImplementedError

    async def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        return {}

    async def numpat(self) -> int:
        return 0

    async def channels(self, pattern: str | None = None) -> list[str]:
        return []

    async def aclose(self) -> None:
        pass


class StubBroker(Broker):
    url = "stub://"

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[str, ...]]] = []
        self.refused: set[str] = set()
        self.frozen = False
        self.subscribers: list[StubSubscriber] = []

    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        self.subscribers.append(StubSubscriber(self))
        return self.subscribers[-1]

    async def open_publisher(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Publisher:
        return StubPublisher()


class Harness:
    def __init__(self) -> None:
        self.broker = StubBroker()
        self.refusals: list[tuple[tuple[str, ...], str]] = []
        #: What on_subscribed was told, in order.
        self.subscribed: list[str] = []
        self.statuses: list[str] = []

        async def deliver(batch: list[Any]) -> None:
            pass

        self.supervisor = ConnectionSupervisor(
            self.broker,
            deliver=deliver,
            on_status=lambda status, data: self.statuses.append(status.name),
            on_refused=lambda channels, patterns, error: self.refusals.append(
                (channels, error.code)
            ),
            on_subscribed=self.subscribed.extend,
            backoff=FAST,
            connect_timeout=1,
            publish_timeout=1,
            health_check_interval=30,
            stats=Counters(),
            logger=logging.getLogger("tidings.test"),
        )


async def test_a_refused_name_is_found_given_up_and_never_replayed() -> None:
    h = Harness()
    h.broker.refused = {"bad"}
    async with anyio.create_task_group() as tg:
        await tg.start(h.supervisor.run)
        with pytest.raises(ReplyError, match="NOPERM"):
            await h.supervisor.subscribe(channels=("a", "bad", "b"))
        # The whole command first; after its refusal, one name at a time.
        assert h.broker.commands == [
            ("subscribe", ("a", "bad", "b")),
            ("subscribe", ("a",)),
            ("subscribe", ("bad",)),
            ("subscribe", ("b",)),
        ]
        assert h.supervisor.channels == ("a", "b")
        assert h.refusals == [(("bad",), "NOPERM")]
        # A new connection subscribes what is wanted, and nothing refused.
        h.broker.commands.clear()
        await h.broker.subscribers[-1].aclose()
        await eventually(lambda: h.statuses.count("connected") == 2)
        assert h.broker.commands == [("subscribe", ("a", "b"))]
        await h.supervisor.aclose()


async def test_subscribed_names_are_told_once_confirmed_and_again_after_a_reconnect() -> None:
    """What durable channels read back after: confirmed subscriptions, not refused
    ones, every time a connection makes them."""
    h = Harness()
    h.broker.refused = {"bad"}
    async with anyio.create_task_group() as tg:
        await tg.start(h.supervisor.run)
        await h.supervisor.subscribe(channels=("a",))
        assert h.subscribed == ["a"]
        with pytest.raises(ReplyError):
            await h.supervisor.subscribe(channels=("b", "bad"))
        assert h.subscribed == ["a", "b"]
        await h.supervisor.subscribe(channels=("a",))  # subscribed already: no news
        assert h.subscribed == ["a", "b"]
        await h.broker.subscribers[-1].aclose()
        await eventually(lambda: h.statuses.count("connected") == 2)
        assert sorted(h.subscribed[2:]) == ["a", "b"]
        await h.supervisor.aclose()


async def test_marks_come_at_once_for_new_names_and_at_a_barrier_for_old_ones() -> None:
    h = Harness()
    marks: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(h.supervisor.run)
        await h.supervisor.subscribe(channels=("a",), mark=lambda: marks.append("new"))
        assert marks == ["new"]
        assert ("barrier", ()) not in h.broker.commands
        await h.supervisor.subscribe(channels=("a",), mark=lambda: marks.append("old"))
        assert marks == ["new", "old"]
        assert h.broker.commands[-1] == ("barrier", ())
        await h.supervisor.aclose()


async def test_a_lost_session_releases_its_waiters_with_their_marks() -> None:
    h = Harness()
    marks: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(h.supervisor.run)
        await h.supervisor.subscribe(channels=("a",))
        h.broker.frozen = True  # the next command is never answered
        done = anyio.Event()

        async def waiter() -> None:
            await h.supervisor.subscribe(channels=("b",), mark=lambda: marks.append("b"))
            done.set()

        tg.start_soon(waiter)
        await eventually(lambda: ("subscribe", ("b",)) in h.broker.commands)
        assert not done.is_set()
        h.broker.frozen = False
        await h.broker.subscribers[-1].aclose()  # the session ends
        with anyio.fail_after(5):
            await done.wait()  # released: "b" stays wanted for the next connection
        assert marks == ["b"]
        await eventually(lambda: h.supervisor.status is StatusType.connected)
        assert h.supervisor.channels == ("a", "b")
        await h.supervisor.aclose()


async def test_status_log_lines_show_seconds_to_the_millisecond(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}"
    backoff = tidings.Backoff(initial=0.0123456789, cap=0.05, jitter=True)
    with caplog.at_level(logging.DEBUG, "tidings"):
        async with tidings.Channels(nothing_there, backoff=backoff, connect_timeout=0.5):
            await eventually(lambda: caplog.text.count("retry_in=") >= 2)
    shown = re.findall(r"retry_in=([0-9.e-]+)", caplog.text)
    assert shown
    assert all(len(value.partition(".")[2]) <= 3 for value in shown), shown
