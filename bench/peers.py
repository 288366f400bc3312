"""What the peer libraries need to run here: shared by the contenders and bench/web.py.

Peers (coredis, FastStream, broadcaster, taskiq-redis) are the ``bench`` extra, never
dependencies of tidings; the test environment installs none of them, and a contender
whose library is missing reports itself skipped (`missing_peer`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

#: The import names of the peer libraries: a contender that fails to import one of
#: them is skipped ("not installed"), not failed.
PEER_MODULES = frozenset({"coredis", "faststream", "broadcaster", "taskiq", "taskiq_redis"})


def missing_peer(exc: BaseException) -> str | None:
    """The peer library that ``exc`` says is not installed, or None."""
    if isinstance(exc, ModuleNotFoundError) and exc.name is not None:
        top = exc.name.split(".", 1)[0]
        if top in PEER_MODULES:
            return top
    return None


@contextlib.asynccontextmanager
async def broadcaster_subscribe(broadcast: Any, channel: str) -> AsyncIterator[Any]:
    """``broadcast.subscribe(channel)`` on broadcaster's Redis backend, made to work
    with redis-py 8.

    broadcaster 0.3.1's ``RedisBackend.subscribe()`` wakes its listener task before
    redis-py has recorded the subscription. From redis-py 8.0 on the listener runs in
    between, finds nothing subscribed, and waits for a next first subscription that
    never comes: no event is ever delivered. redis-py up to 7.4 does not yield there,
    so broadcaster works unchanged on it (checked with 7.4.0 and 7.4.1; 8.0.0 and
    8.2.0 deliver nothing). Waking the listener again once subscribed works around
    it on every version; the message path is untouched.

    Use it for the channel's first subscriber (later ones reuse the subscription:
    plain ``broadcast.subscribe`` is enough for them).
    """
    async with broadcast.subscribe(channel) as subscriber:
        backend = broadcast._backend
        ready = getattr(backend, "_ready", None)  # the Redis backend's only
        if ready is not None:
            ready.set()
        yield subscriber


def wait_subscribed(port: int, channel: str, timeout: float = 10.0) -> None:
    """Until Redis counts a subscriber of ``channel`` (PUBSUB NUMSUB): for peers whose
    subscribe returns before Redis confirmed it, so that nothing is published first."""
    import redis

    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            [(_name, count)] = client.pubsub_numsub(channel)
            if count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no subscriber of {channel} after {timeout:g} s")
            time.sleep(0.005)
    finally:
        client.close()
