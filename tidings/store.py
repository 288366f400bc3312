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
=================================================  ===================================

Every URL accepts ``?namespace=NAME``, the default namespace of the
:class:`~tidings.Channels` built on it. Redis URLs also take ``client_name``
(``CLIENT SETNAME`` prefix, default ``tidings``) and, for ``rediss://``,
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs=none`` and
``ssl_check_hostname=false``. User names and passwords are percent-decoded; a
password never appears in ``str``, ``repr``, logs or exceptions. Cluster URLs list
seed nodes and take ``sharded=1`` for sharded pub/sub (SSUBSCRIBE/SPUBLISH).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ._util import quote_userinfo, redact
from .brokers.base import Broker
from .brokers.cluster import ClusterBroker, parse_cluster_url
from .brokers.memory import Hub, MemoryBroker
from .brokers.redis import RedisBroker, parse_redis_url
from .policies.names import check_namespace

if TYPE_CHECKING:
    from .protocols import Codec
    from .pubsub import PubSub

__all__ = ["Store", "create_store"]


class Store:
    """A broker and the URL it came from. Create one with :func:`create_store`."""

    def __init__(self, broker: Broker, namespace: str | None = None) -> None:
        self.broker = broker
        #: The default namespace (from the URL's ``?namespace=``), or None.
        self.namespace = namespace

    @property
    def url(self) -> str:
        """The broker's URL, password redacted, without the namespace."""
        return self.broker.url

    def pubsub(
        self, protocol: Codec | None = None, logger: logging.Logger | None = None, **options: Any
    ) -> PubSub:
        """A new :class:`~tidings.PubSub` handler on this store."""
        from .pubsub import PubSub

        return PubSub(self, protocol, logger, **options)

    def __repr__(self) -> str:
        suffix = f"?namespace={self.namespace}" if self.namespace else ""
        return f"Store({self.url + suffix!r})"


def create_store(url: str = "memory://") -> Store:
    """Create a store from a URL (see the module docs for the forms).

    Raises:
        TypeError: ``url`` is not a ``str``.
        ValueError: a malformed URL or an unknown scheme or parameter; the message
            names the URL, with any password redacted.
    """
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a str, not {type(url).__name__}: {url!r}")
    shown = redact(url)
    url = quote_userinfo(url)  # a password's "/", "?", "#", "@" stay in the password
    try:
        parts = urlsplit(url)
        params = _params(parts.query, shown)
    except ValueError as exc:
        raise ValueError(f"malformed store URL {shown!r}: {exc}") from None
    namespace = check_namespace(params.pop("namespace", None)) or None
    scheme = parts.scheme.lower()
    broker: Broker
    if scheme == "memory":
        broker = _memory_broker(parts.netloc, parts.path, params, shown)
    elif scheme in ("redis", "rediss", "unix"):
        broker = RedisBroker(parse_redis_url(scheme, parts, params, shown))
        _unknown(params, shown)
    elif scheme in ("redis+cluster", "rediss+cluster"):
        address = parse_cluster_url(scheme, parts.netloc, parts.path, params, shown)
        broker = ClusterBroker(address)
        _unknown(params, shown)
    else:
        raise ValueError(
            f"unknown scheme {parts.scheme!r} in store URL {shown!r}; "
            "use memory://, redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
        )
    return Store(broker, namespace)


def _params(query: str, shown: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key in params:
            raise ValueError(f"parameter {key!r} given twice in store URL {shown!r}")
        params[key] = value
    return params


def _unknown(params: dict[str, str], shown: str) -> None:
    if params:
        raise ValueError(
            f"unknown parameter{'s' if len(params) > 1 else ''} "
            f"{', '.join(map(repr, sorted(params)))} in store URL {shown!r}"
        )


def _memory_broker(netloc: str, path: str, params: dict[str, str], shown: str) -> MemoryBroker:
    if "@" in netloc or ":" in netloc:
        raise ValueError(
            f"memory:// URLs take a hub name only, no user, password or port: {shown!r}"
        )
    if path not in ("", "/"):
        raise ValueError(f"memory:// URLs take no path (use memory://NAME): {shown!r}")
    _unknown(params, shown)
    return MemoryBroker(Hub.named(netloc) if netloc else Hub())
