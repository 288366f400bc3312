"""The dispatch actor alone: decode, positions, interruption, discard mid-batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests.helpers import recording_dispatcher
from tidings.actors.callbacks import Registration
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
        self.mailbox: Mailbox[bytes] = Mailbox(100)
        self.dispatcher, self.stats, self.removed = recording_dispatcher(limit=5)
        self.registrations: list[Registration] = []
        self.found: dict[str, tuple[Registration, ...]] = {}
        self.actor = DispatchActor(
            "c",
            self.mailbox,
            decode=envelope_decoder(Json()),
            owner="the channel",
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


async def test_a_lazy_actor_handles_in_place_until_a_callback_awaits(world: World) -> None:
    """In place: the batch is done at once; an async callback hands the rest (not yet
    started) back for the mailbox, and ``run`` finishes the awaited message first."""
    seen: list[Any] = []

    async def slow(channel: Any, event: str, data: Any) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("async", data))

    world.register(lambda channel, event, data: seen.append(data))
    assert world.actor.handle_now([envelope("e", 1), envelope("e", 2)]) is None
    assert seen == [1, 2]
    assert (world.mailbox.routed, world.mailbox.taken) == (2, 2)  # positions advanced
    world.register(slow)
    rest = world.actor.handle_now([envelope("e", 3), envelope("e", 4), envelope("e", 5)])
    assert rest == [envelope("e", 4), envelope("e", 5)]  # the mailbox's to bound
    assert seen == [1, 2, 3]  # the sync callback of 3 ran; its async one waits
    assert (world.mailbox.routed, world.mailbox.taken) == (3, 3)
    world.mailbox.put_nowait(rest)
    world.mailbox.close()
    await world.actor.run()
    assert seen == [1, 2, 3, ("async", 3), 4, ("async", 4), 5, ("async", 5)]
    assert world.stats.delivered == 2 + 3 * 2


async def test_a_lazy_actor_gives_its_task_back_when_nothing_awaits(world: World) -> None:
    world.actor.lazy = True
    seen: list[Any] = []
    world.register(lambda channel, event, data: seen.append(data))
    world.mailbox.put_nowait([envelope("e", 1)])
    await world.actor.run()  # returns once the mailbox is empty: no task kept
    assert seen == [1]
    assert not world.mailbox.closed


async def test_a_crash_in_place_skips_one_message_and_gives_back_the_rest(
    world: World,
) -> None:
    class Bug(Exception):
        pass

    def decode(owner: Any, payload: bytes) -> tuple[str, tuple[Any, ...], None]:
        if payload == b"bug":
            raise Bug  # not a decode error: a bug in the codec
        return "e", (owner, "e", payload), None

    world.actor._decode = decode
    seen: list[Any] = []
    world.register(lambda channel, event, data: seen.append(data))
    with pytest.raises(Bug):
        world.actor.handle_now([b"1", b"bug", b"2", b"3"])
    assert world.actor.give_back() == [b"2", b"3"]
    assert seen == [b"1"]
    world.mailbox.put_nowait([b"2", b"3"])
    world.mailbox.close()
    await world.actor.run()  # the restart: on with the message after the crash
    assert seen == [b"1", b"2", b"3"]


async def test_discarding_an_actor_whose_task_never_started_abandons_its_message(
    world: World,
) -> None:
    called: list[Any] = []

    async def slow(channel: Any, event: str, data: Any) -> None:
        called.append(data)

    world.register(slow)
    assert world.actor.handle_now([envelope("e", 1), envelope("e", 2)]) == [envelope("e", 2)]
    # Stopped before its task ran: the coroutine is closed, never awaited, and the
    # message counts as dropped (the rest was never queued: its caller counts it).
    assert world.actor.discard() == 1
    assert (called, world.stats.dropped, world.stats.delivered) == ([], 0, 0)
