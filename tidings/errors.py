"""The exceptions tidings raises.

A small, flat hierarchy under one base, one class per condition. Transport failures
are translated into these at the broker boundary; anyio's own
:class:`~anyio.ClosedResourceError` and :class:`~anyio.BrokenResourceError` are not
re-invented.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CallbackError",
    "ProtocolError",
    "PublishError",
    "TidingsError",
]


class TidingsError(Exception):
    """Base class of every exception defined by tidings."""


class ProtocolError(TidingsError):
    """A payload could not be decoded (or is not a valid tidings event).

    The channel actor that met it logs it, counts it in ``stats().decode_errors`` and
    carries on with the next message: one bad message is never fatal.
    """


class PublishError(TidingsError):
    """A publish could not be handed to the broker.

    Raised when no connection came up within ``publish_timeout``, when the connection
    broke while the publish was in flight (the broker may or may not have received it),
    or when the handler was closed while the publish waited.
    """


class CallbackError(TidingsError):
    """Raise it from a callback to unregister that callback at once.

    It is the clean way for a callback to say "I am done": the callback is removed
    without an error being logged or counted.
    """


class BrokerError(TidingsError):
    """The broker refused a connection or a command, or a query found no connection.

    Examples: a wrong password, an unknown command, ``count()`` while disconnected
    for longer than ``publish_timeout``. On the subscriber connection the connection
    supervisor treats it like any lost connection: it reports it in the status events
    and retries with back-off.
    """
