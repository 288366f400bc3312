"""The dispatch actor alone: decode, positions, interruption, discard mid-batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tidings._stats import Counters
from tidings.actors.callbacks import Dispatcher, Registration
from tidings.actors.dispatch import DispatchActor, envelope_decoder
from tidings.actors.mailbox import Mailbox
from tidings.protocols import Json

pytestmark = pytest.mark.anyio

LOG = logging.getLogger("tidings.test")


def envelope(event: str, data: Any) -> bytes:
    return Json().encode({"channel": "c", "event": event, "data": data})


class World:
    """A channel's dispatch actor with its mailbox, dispatcher and registrations."""

    def __init__(self) -> None:
        self.stats = Counters()
        self.mailbox: Mailbox[bytes] = Mailbox(100)
        self.removed: list[Registration] = []
        self.dispatcher = Dispatcher(
            stats=self.stats,
            logger=LOG,
            remove=self.removed.append,
            failure_limit=5,
            failure_window=60,
        )
        self.registrations: list[Registration] = []
        self.found: dict[str, tuple[Registration, ...]] = {}
        self.actor = DispatchActor(
            "c",
            self.mailbox,
            decode=envelope_decoder(Json(), "the channel"),
            registrations_for=lambda event: tuple(self.registrations),
            found=self.found,
            dispatcher=self.dispatcher,
            stats=self.stats,
            logger=LOG,
        )

    def register(self, callback: Any) -> Registration:
        registration = self.dispatcher.registration("*", callback)
        registration.since = self.mailbox.routed  # as Channels.register does
        self.registrations.append(registration)
        return registration


@pytest.fixture
def world() -> Iterator[World]:
    world = World()
    yield world
    world.mailbox.discard()  # both ends closed: no stream left behind


async def test_messages_are_decoded_and_dispatched_in_order_with_decode_errors_counted(
    world: World,
) -> None:
    seen: list[tuple[str, Any]] = []
    world.register(lambda channel, event, data: seen.append((event, data)))
    world.mailbox.put_nowait([envelope("a", 1), b"not json", envelope("b", 2)])
    world.mailbox.close()
    await world.actor.run()
    assert seen == [("a", 1), ("b", 2)]
    assert (world.stats.delivered, world.stats.decode_errors) == (2, 1)


async def test_a_registration_sees_only_messages_routed_after_it(world: World) -> None:
    early: list[Any] = []
    late: list[Any] = []
    world.register(lambda channel, event, data: early.append(data))
    world.mailbox.put_nowait([envelope("e", 1), envelope("e", 2)])
    world.register(lambda channel, event, data: late.append(data))  # after 2 were queued
    world.mailbox.put_nowait([envelope("e", 3)])
    world.mailbox.close()
    await world.actor.run()
    assert (early, late) == ([1, 2, 3], [3])
    assert world.stats.unrouted == 0


async def test_an_interrupted_async_callback_counts_its_message_as_dropped(
    world: World,
) -> None:
    started = anyio.Event()

    async def slow(channel: Any, event: str, data: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    world.register(slow)
    world.mailbox.put_nowait([envelope("e", 1), envelope("e", 2)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(world.actor.run)
        await started.wait()
        assert world.actor.discard() == 1  # the second message, never started
        tg.cancel_scope.cancel()
    assert (world.stats.delivered, world.stats.dropped) == (0, 1)  # the first, interrupted


async def test_discarding_from_inside_a_callback_ends_the_batch_once(world: World) -> None:
    calls: list[Any] = []

    def stop_at_two(channel: Any, event: str, data: Any) -> None:
        calls.append(data)
        if data == 2:
            assert world.actor.discard() == 2  # the rest of this batch

    world.register(stop_at_two)
    world.mailbox.put_nowait([envelope("e", n) for n in range(1, 5)])
    await world.actor.run()  # the mailbox is discarded: run ends
    assert calls == [1, 2]
    assert world.stats.unrouted == 0  # nothing replayed
