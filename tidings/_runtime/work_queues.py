"""Work queues: the consumer groups a `Channels` handler is a member of.

One `GroupMember` per (durable channel, group) with
registrations here, supervised like the channels' actors, woken by the channel's
live messages (through its actor) and by every resubscription. The handler is one
consumer of each group, under a name unique to it (host, process, a random part).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from ..actors.callbacks import Dispatcher
from ..actors.dispatch import Decode
from ..actors.durable import DurableActor
from ..actors.group import GroupMember, Query
from ..actors.router import Router
from ..brokers.base import GroupInfo, Publisher
from ..options import Options
from ..policies.streams import Retention, position
from ..stats import Counters
from ..supervisors.actors import ActorSupervisor
from .channel import ChannelState

__all__ = ["Groups"]

#: Seconds between two looks of `Groups.settle()` at the broker.
SETTLE_POLL = 0.005


def consumer_name() -> str:
    """A consumer name no other handler uses: readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Groups:
    """The group members of one handler."""

    def __init__(
        self,
        *,
        query: Query,
        actors: ActorSupervisor,
        router: Router,
        options: Options,
        stats: Counters,
        logger: logging.Logger,
        decode: Decode,
        encode: Callable[[Any], bytes],
        dispatcher: Dispatcher,
        emit: Callable[[str, dict[str, Any]], None],
        retention: Callable[[str], Retention],
    ) -> None:
        self._query = query
        self._actors = actors
        self._router = router
        self._options = options
        self._stats = stats
        self._logger = logger
        self._decode = decode
        self._encode = encode
        self._emit = emit
        self._dispatcher = dispatcher
        self._retention = retention
        self._members: dict[tuple[str, str], GroupMember] = {}
        self._serial = 0
        #: This handler's consumer name in every group it joins.
        self.consumer = consumer_name()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._members

    def memberships(self) -> set[tuple[str, str]]:
        """The ``(channel, group)`` pairs this handler is a member of."""
        return set(self._members)

    async def create(self, wanted: dict[tuple[str, str], str]) -> None:
        """Create the groups ``(channel, group) -> start id`` this handler is not a
        member of yet (a group that exists is left as it is: its position counts,
        not ``since``).

        Raises:
            ReplyError: the broker refused (an ACL?).
            BrokerError: no connection within ``publish_timeout``.
        """
        for (name, group), start in wanted.items():
            if (name, group) in self._members:
                continue

            async def create(
                publisher: Publisher, name: str = name, group: str = group, start: str = start
            ) -> bool:
                return await publisher.group_create(name, group, start)

            if await self._query(f"create consumer group {group!r} of {name!r}", create):
                self._logger.debug("consumer group %r of %r created at %s", group, name, start)

    def join(self, channel: ChannelState, group: str) -> None:
        """Be a member of ``group`` on ``channel`` (if not one already)."""
        name = channel.broker_name
        if (name, group) in self._members or not self._actors.running:
            return
        options = self._options
        self._serial += 1
        member = GroupMember(
            channel.channel,
            name,
            group,
            # One consumer per member: a member still leaving (DELCONSUMER once
            # nothing is pending for it) never shares its name with the next one.
            f"{self.consumer}-{self._serial}",
            query=self._query,
            registrations_for=lambda event: channel.group_registrations_for(group, event),
            decode=self._decode,
            encode=self._encode,
            dispatcher=self._dispatcher,
            on_dead=lambda *dead: self._dead(channel, group, *dead),
            on_lost=lambda reason, ids, lost: self._lost(channel, group, reason, ids, lost),
            retention=self._retention(name),
            ack_wait=options.ack_wait,
            max_deliver=options.max_deliver,
            claim_interval=min(options.ack_wait / 2, options.recheck_interval),
            retry_backoff=options.retry_backoff,
            stats=self._stats,
            logger=self._logger,
            serial=self._serial,
        )
        self._members[name, group] = member
        actor = self._router.get(name)
        if isinstance(actor, DurableActor):
            actor.groups.append(member)
        self._actors.start(member)

    def leave(self, channel: ChannelState, groups: Iterable[str] | None = None) -> None:
        """Stop being a member of ``groups`` on ``channel`` (all of them: None).

        The member finishes the event in hand, hands back the rest and leaves the
        group in its own task.
        """
        name = channel.broker_name
        for group in list(groups) if groups is not None else self.of(name):
            member = self._members.pop((name, group), None)
            if member is None:
                continue
            actor = self._router.get(name)
            if isinstance(actor, DurableActor) and member in actor.groups:
                actor.groups.remove(member)
            member.close()

    def of(self, name: str) -> list[str]:
        """The groups this handler is a member of on channel ``name``."""
        return [group for channel, group in self._members if channel == name]

    async def settle(self) -> None:
        """Return once every group this handler is a member of has handed out its
        log up to where it ends now, and has nothing pending: each entry acknowledged,
        dead-lettered, or scheduled for a retry (see ``tidings.testing.settle()``).

        It asks the broker, so it waits as the broker's answers do; between looks it
        sleeps (a callback may be slow), and wakes the members so they read at once.
        """
        ends: dict[tuple[str, str], int] = {}
        for name, group in list(self._members):
            tail = await self._tail(name)
            ends[name, group] = position(tail) if tail is not None else 0
        while ends:
            for (name, group), end in list(ends.items()):
                info = await self._group_info(name, group)
                if info is None or (
                    not info.pending and position(info.last_delivered or "0-0") >= end
                ):
                    del ends[name, group]
                else:
                    member = self._members.get((name, group))
                    if member is not None:
                        member.wake()
            if ends:
                await anyio.sleep(SETTLE_POLL)

    async def _tail(self, name: str) -> str | None:
        async def tail(publisher: Publisher) -> str | None:
            return await publisher.tail(name)

        result: str | None = await self._query(f"read the end of {name!r}", tail)
        return result

    async def _group_info(self, name: str, group: str) -> GroupInfo | None:
        async def info(publisher: Publisher) -> list[GroupInfo]:
            return await publisher.group_info(name)

        infos: list[GroupInfo] = await self._query(f"inspect the groups of {name!r}", info)
        return next((i for i in infos if i.name == group), None)

    def wake(self, names: Iterable[str]) -> None:
        """The live stream of these channels is back: their members read what came."""
        for (name, _), member in self._members.items():
            if name in names:
                member.wake()

    def forget(self) -> None:
        """The handler stopped: its members are gone (a restart makes new ones)."""
        for member in self._members.values():
            member.close()
        self._members.clear()

    async def leave_all(self) -> None:
        """Every member leaves its group (the caller bounds the wait)."""
        members = list(self._members.values())
        for member in members:
            member.close()
        for member in members:
            await member.leave()

    def _dead(
        self,
        channel: ChannelState,
        group: str,
        entry_id: str,
        deliveries: int,
        error: str,
        dead_id: str,
    ) -> None:
        self._logger.warning(
            "consumer group %r of %r: event %s dead-lettered after %d deliveries: %s",
            group,
            channel.name,
            entry_id,
            deliveries,
            error,
        )
        self._emit(
            "dead_letter",
            {
                "channel": channel.name,
                "group": group,
                "id": entry_id,
                "deliveries": deliveries,
                "error": error,
                "dead_id": dead_id,
            },
        )

    def _lost(
        self, channel: ChannelState, group: str, reason: str, ids: list[str], lost: int | None
    ) -> None:
        if reason == "trimmed":
            self._logger.warning(
                "consumer group %r of %r: %d pending events were trimmed from the log "
                "before they were acknowledged: lost (%s)",
                group,
                channel.name,
                len(ids),
                ", ".join(ids[:10]),
            )
        self._emit(
            "gap",
            {
                "channel": channel.name,
                "group": group,
                "reason": reason,
                "last_id": None,
                "next_id": None,
                "ids": ids,
                # How many events went (for a deleted group: what it had in hand,
                # pending or not handed out, at its last look; None: unknown).
                "lost": lost,
            },
        )
