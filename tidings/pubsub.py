"""PubSub: the seed API's lower-level handler.

Clients are functions ``client(channel, message)`` (sync or async) that receive every
message on every channel and pattern subscribed. There are no namespaces and no
events here: channel names are used on the broker as given.

```python
async with store.pubsub() as pubsub:
    pubsub.add_client(print)
    await pubsub.subscribe("news")
    await pubsub.publish("news", b"hello")
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, Unpack

from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from ._runtime.lifecycle import Hooks, Lifecycle, Runtime
from .actors.callbacks import Registration
from .actors.dispatch import DispatchActor
from .actors.mailbox import Mailbox
from .brokers.base import Broker, Message
from .brokers.factory import open_url
from .options import OptionArgs, Options
from .policies.names import check_name
from .protocols import Bytes, Codec

__all__ = ["PubSub", "StoreLike"]

#: Signature of a client: ``client(channel, message)``, sync or async.
Client = Callable[[str, Any], Any]


class StoreLike(Protocol):
    """What a `PubSub` needs of its store (a `Store` is one): its broker and URL.

    A protocol, not the class, so that ``tidings.store`` imports this module one
    way (its ``Store.pubsub()`` makes a `PubSub`), as httpcore's interfaces do.
    """

    @property
    def broker(self) -> Broker: ...

    @property
    def url(self) -> str: ...


class _URLStore:
    """The store of a `PubSub` given a URL."""

    def __init__(self, url: str) -> None:
        self.broker, self.namespace = open_url(url)

    @property
    def url(self) -> str:
        return self.broker.url

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


def _names(what: str, first: Any, rest: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(check_name(name, what) for name in (first, *rest))


class PubSub(Lifecycle):
    """A publish/subscribe handler. Get one from `Store.pubsub()`.

    Args:
        store: a `Store`, or a URL.
        protocol: encodes what `publish()` sends and decodes what clients
            receive; ``None`` passes bytes through (``str`` is sent as UTF-8).
        logger: where to log (default: the ``tidings`` logger).
        **options: see `Options`.

    Run it with ``async with`` or ``await nursery.start(pubsub.run)``.
    """

    def __init__(
        self,
        store: StoreLike | str = "memory://",
        protocol: Codec | None = None,
        logger: logging.Logger | None = None,
        **options: Unpack[OptionArgs],
    ) -> None:
        self._store = _URLStore(store) if isinstance(store, str) else store
        self.protocol = protocol
        self._codec: Codec = protocol if protocol is not None else Bytes()
        runtime = self._runtime = Runtime(
            self._store.broker, Options.from_kwargs(options), logger, kind=type(self).__name__
        )
        runtime.hooks = Hooks(
            removed=self._removed,
            start_actors=self._start_actors,
            after_run=self._after_run,
            describe=lambda name: "pubsub clients",
        )
        self._connection = runtime.connection
        self._clients: dict[Client, Registration] = {}
        self._snapshot: tuple[Registration, ...] = ()
        self._dispatcher = runtime.new_dispatcher(runtime.stats, self._removed)
        self._mailbox: Mailbox[Message] | None = None
        # Subscribe calls in flight, by (is a pattern, name), and the names they
        # found unsubscribed: what a failed call may have to give up again.
        self._waiting: dict[tuple[bool, str], int] = {}
        self._fresh: set[tuple[bool, str]] = set()

    @property
    def store(self) -> StoreLike:
        """The store this handler runs on (made from the URL, if given one)."""
        return self._store

    def __str__(self) -> str:
        return self._store.url

    __repr__ = __str__

    # -- clients ------------------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        """Add a client; adding the same one twice does nothing.

        Raises:
            TypeError: ``client`` is not callable.
        """
        if not callable(client):
            raise TypeError(f"a client must be callable, not {type(client).__name__}: {client!r}")
        if client not in self._clients:
            registration = Registration("client", client, self)
            if self._mailbox is not None:  # what is queued came before this client
                registration.since = self._mailbox.routed
            self._clients[client] = registration
            self._snapshot = tuple(self._clients.values())

    def remove_client(self, client: Client) -> None:
        """Remove a client (no error if it is not there)."""
        registration = self._clients.pop(client, None)
        if registration is not None:
            registration.active = False
            self._snapshot = tuple(self._clients.values())

    @property
    def clients(self) -> tuple[Client, ...]:
        """The clients, in the order they were added."""
        return tuple(self._clients)

    def _removed(self, registration: Registration) -> None:
        if self._clients.get(registration.callback) is registration:
            self.remove_client(registration.callback)

    # -- subscriptions ------------------------------------------------------------------

    async def subscribe(self, channel: str, *channels: str) -> None:
        """Subscribe to channels; returns once the broker confirmed them (if connected).

        Raises:
            ValueError: an empty or non-str channel name.
            ReplyError: the broker refused (none of these is subscribed then, and
                none is retried on reconnect).
            RuntimeError: not running, or closed.
        """
        names = _names("channel name", channel, channels)
        self._runtime.check_running("subscribe")
        await self._subscribe(channels=names)

    async def unsubscribe(self, *channels: str) -> None:
        """Unsubscribe from channels (from every channel when none is named).

        Returns once the broker confirmed (if connected). The change is made before
        anything is awaited: cancelled while waiting, it still happens.
        """
        connection = self._connection
        names = (
            _names("channel name", channels[0], channels[1:]) if channels else connection.channels
        )
        self._runtime.check_running("unsubscribe")
        await checkpoint_if_cancelled()
        await connection.unsubscribe(channels=names)

    async def psubscribe(self, pattern: str, *patterns: str) -> None:
        """Subscribe to glob patterns; returns once confirmed (if connected).

        Raises:
            ValueError: an empty or non-str pattern, or a sharded cluster store.
            ReplyError: the broker refused (the patterns are not subscribed).
            RuntimeError: not running, or closed.
        """
        names = _names("pattern", pattern, patterns)
        if not self._store.broker.supports_patterns:
            raise ValueError(f"{self._store.url} is sharded: sharded pub/sub has no patterns")
        self._runtime.check_running("psubscribe")
        await self._subscribe(patterns=names)

    async def punsubscribe(self, *patterns: str) -> None:
        """Unsubscribe from patterns (from every pattern when none is named)."""
        connection = self._connection
        names = _names("pattern", patterns[0], patterns[1:]) if patterns else connection.patterns
        self._runtime.check_running("punsubscribe")
        await checkpoint_if_cancelled()
        await connection.unsubscribe(patterns=names)

    async def _subscribe(
        self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()
    ) -> None:
        """Subscribe; cancelled or refused, the names this call added are given up.

        Names subscribed before the call, or by a concurrent call that succeeds, stay
        subscribed: a name is given up only by the last of the calls waiting for it,
        and only if none of them found it subscribed already.
        """
        connection = self._connection
        keys = [(False, name) for name in channels] + [(True, name) for name in patterns]
        for key in keys:
            if not self._waiting.get(key):
                wanted = (
                    connection.wants(patterns=(key[1],))
                    if key[0]
                    else connection.wants(channels=(key[1],))
                )
                if not wanted:
                    self._fresh.add(key)
            self._waiting[key] = self._waiting.get(key, 0) + 1
        failed = True
        try:
            await connection.subscribe(channels=channels, patterns=patterns)
            failed = False
        finally:
            given_up = []
            for key in keys:
                self._waiting[key] -= 1
                if not failed:
                    self._fresh.discard(key)
                if not self._waiting[key]:
                    del self._waiting[key]
                    if key in self._fresh:
                        self._fresh.discard(key)
                        given_up.append(key)
            if given_up:
                connection.unsubscribe_nowait(
                    channels=tuple(name for pattern, name in given_up if not pattern),
                    patterns=tuple(name for pattern, name in given_up if pattern),
                )

    # -- commands -----------------------------------------------------------------------

    async def publish(self, channel: str, message: Any) -> int:
        """Publish ``message`` (encoded by the protocol) on ``channel``.

        Returns:
            How many subscriptions received it.

        Raises:
            ValueError: an empty or non-str channel name.
            TypeError: the protocol cannot encode ``message``.
            RuntimeError: not running, or closed.
            PublishError: no connection within ``publish_timeout``, or lost meanwhile.
        """
        check_name(channel, "channel name")
        payload = self._codec.encode(message)
        self._runtime.check_running("publish")
        return await self._connection.publish(channel, payload)

    async def count(self, *channels: str) -> dict[str, int]:
        """Subscribers of each channel, patterns not counted (PUBSUB NUMSUB)."""
        names = tuple(check_name(name, "channel name") for name in channels)
        self._runtime.check_running("count")
        if not names:
            await checkpoint()
            return {}
        return await self._connection.query("count", lambda p: p.numsub(names))

    async def count_patterns(self) -> int:
        """Distinct patterns subscribed on the broker (PUBSUB NUMPAT)."""
        self._runtime.check_running("count_patterns")
        return await self._connection.query("count_patterns", lambda p: p.numpat())

    async def channels(self, pattern: str | None = None) -> list[str]:
        """Active channels (with an exact subscriber), optionally matching a glob."""
        if pattern is not None:
            check_name(pattern, "pattern")
        self._runtime.check_running("channels")
        return await self._connection.query("channels", lambda p: p.channels(pattern))

    # -- internals ----------------------------------------------------------------------

    def _start_actors(self) -> None:
        # Started again after a close: the clients count from the new mailbox.
        for registration in self._clients.values():
            registration.since = 0
        runtime = self._runtime
        # Lazy: while the clients are sync, the reader calls them in place. Every
        # message goes to it, whatever its channel: a router with one route.
        actor = DispatchActor(
            "pubsub clients",
            Mailbox(runtime.options.max_pending, runtime.options.overflow),
            decode=self._decode_message,
            registrations_for=lambda key: self._snapshot,
            where=lambda owner, message: f"pubsub clients on {message[0]!r}",
            dispatcher=self._dispatcher,
            stats=runtime.stats,
            logger=runtime.logger,
            lazy=True,
        )
        self._mailbox = actor.mailbox
        runtime.router.catch_all(actor)

    def _decode_message(self, owner: None, message: Message) -> tuple[str, tuple[Any, ...], None]:
        channel, payload = message
        return "", (channel, self._codec.decode(payload)), None

    async def _after_run(self) -> None:
        runtime = self._runtime
        runtime.router.catch_all(None)
        for actor in runtime.actors.leftovers():  # past close_timeout: undelivered
            runtime.stats.dropped += actor.discard()
        if self._mailbox is not None:
            runtime.stats.dropped += self._mailbox.discard()
        await checkpoint()
