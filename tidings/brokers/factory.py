"""A broker from a store URL: the one place each URL form meets its broker class."""

from __future__ import annotations

from .base import Broker
from .cluster import ClusterBroker
from .memory import Hub, MemoryBroker
from .redis import RedisBroker
from .sentinel import SentinelBroker
from .urls import ClusterAddress, MemoryAddress, SentinelAddress, parse_store_url

__all__ = ["open_url"]


def open_url(url: str) -> tuple[Broker, str | None]:
    """The broker a store URL names, and the URL's ``?namespace=`` (or None).

    Raises:
        TypeError: ``url`` is not a ``str``.
        ValueError: a malformed URL or an unknown scheme or parameter; the message
            names the URL, with any password redacted.
    """
    address, namespace = parse_store_url(url)
    broker: Broker
    if isinstance(address, MemoryAddress):
        broker = MemoryBroker(Hub.named(address.name) if address.name else Hub())
    elif isinstance(address, ClusterAddress):
        broker = ClusterBroker(address)
    elif isinstance(address, SentinelAddress):
        broker = SentinelBroker(address)
    else:
        broker = RedisBroker(address)
    return broker, namespace
