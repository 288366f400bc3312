"""Stores: a broker addressed by URL.

=================================================  ===================================
URL                                                broker
=================================================  ===================================
``memory://``                                      a private in-process hub (default)
``memory://NAME``                                  the in-process hub named NAME
``redis://[user[:password]@]host[:port][/db]``     Redis over TCP
``rediss://...``                                   Redis over TLS (verified)
``unix:///path/to/redis.sock[?db=N]``              Redis over a unix socket
``redis+cluster://host:port,host:port/``           Redis Cluster (``rediss+cluster`` TLS)
``redis+sentinel://host:port,host:port/SERVICE``   the master of SERVICE, under Sentinel
=================================================  ===================================

Every URL accepts ``?namespace=NAME``, the default namespace of the
`Channels` built on it. Redis URLs also take ``client_name``
(``CLIENT SETNAME`` prefix, default ``tidings``) and, for ``rediss://``,
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs=none`` and
``ssl_check_hostname=false``. User names and passwords are percent-decoded; a
password never appears in ``str``, ``repr``, logs or exceptions. Cluster URLs list
seed nodes and take ``sharded=1`` for sharded pub/sub (SSUBSCRIBE/SPUBLISH).
Sentinel URLs list sentinels (port 26379 by default), then the service and an
optional database (``/SERVICE/2``); the user and password are the master's, and
``sentinel_username`` / ``sentinel_password`` the sentinels' own, if they need them.
"""

from __future__ import annotations

import logging
from typing import Unpack

from .brokers.base import Broker
from .brokers.factory import open_url
from .brokers.urls import display
from .options import OptionArgs
from .protocols import Codec
from .pubsub import PubSub

__all__ = ["Store", "create_store"]


class Store:
    """A broker and the URL it came from. Create one with `create_store()`."""

    def __init__(self, broker: Broker, namespace: str | None = None) -> None:
        self.broker = broker
        #: The default namespace (from the URL's ``?namespace=``), or None.
        self.namespace = namespace

    @property
    def url(self) -> str:
        """The broker's URL, password redacted, without the namespace."""
        return self.broker.url

    def pubsub(
        self,
        protocol: Codec | None = None,
        logger: logging.Logger | None = None,
        **options: Unpack[OptionArgs],
    ) -> PubSub:
        """A new `PubSub` handler on this store."""
        return PubSub(self, protocol, logger, **options)

    def __repr__(self) -> str:
        return f"Store({display(self.url, self.namespace)!r})"


def create_store(url: str = "memory://") -> Store:
    """Create a store from a URL (the forms: the "Stores" table of the "Getting
    started" page; ``memory://`` when none is given).

    Raises:
        TypeError: ``url`` is not a ``str``.
        ValueError: a malformed URL or an unknown scheme or parameter; the message
            names the URL, with any password redacted.
    """
    broker, namespace = open_url(url)
    return Store(broker, namespace)
