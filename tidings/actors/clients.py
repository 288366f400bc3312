"""The clients actor of a PubSub handler: every message, to every client."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._stats import Counters
from ..brokers.base import Message
from ..protocols import Codec
from .base import Actor
from .callbacks import Dispatcher, Registration
from .channel import DECODE_ERRORS, decode_failed
from .mailbox import Mailbox

__all__ = ["ClientsActor"]


class ClientsActor(Actor[Message]):
    """Decodes each message with the protocol and calls ``client(channel, message)``."""

    def __init__(
        self,
        name: str,
        mailbox: Mailbox[Message],
        *,
        clients: Callable[[], tuple[Registration, ...]],
        protocol: Codec,
        dispatcher: Dispatcher,
        stats: Counters,
        logger: logging.Logger,
    ) -> None:
        super().__init__(name, mailbox, stats)
        self._clients = clients
        self._decode = protocol.decode
        self._dispatcher = dispatcher
        self._logger = logger

    async def consume(self) -> None:
        decode, clients, dispatch = self._decode, self._clients, self._dispatcher.dispatch
        batch, base = self._batch, self._base
        while (index := self._next) < len(batch):
            self._next = index + 1
            channel, payload = batch[index]
            try:
                decoded = decode(payload)
            except DECODE_ERRORS as exc:
                decode_failed(self._stats, self._logger, f"{self.name} on {channel!r}", exc)
                continue
            pending = dispatch(clients(), (channel, decoded), self.name, base + index + 1)
            if pending is not None:
                await self._interruptible(pending)
