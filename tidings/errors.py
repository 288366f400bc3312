"""The exceptions tidings raises.

A small, flat hierarchy under one base, one class per condition. Transport failures
are translated into these at the broker boundary; anyio's own
`ClosedResourceError` and `BrokenResourceError` are not
re-invented.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CallbackError",
    "ProtocolError",
    "PublishError",
    "ReplyError",
    "Retry",
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


class Retry(TidingsError):
    """Raise it from a consumer group's callback to have the event delivered again
    later, to any member of the group, no earlier than ``delay`` seconds from now.

    It is a delivery like a failed one (it counts against ``max_deliver``, and in
    ``stats().retries``, not in ``callback_errors``), logged at INFO in one line;
    with no ``delay``, the handler's ``retry_backoff`` decides. When it exhausts
    ``max_deliver``, the event moves to the dead letters, whose error says so:

    ```python
    async def charge(channel, event, order):
        if not payments.available():
            raise tidings.Retry(delay=30)
        ...
    ```

    Outside consumer groups it is an ordinary callback error.

    Args:
        delay: seconds, >= 0 (None: the back-off's delay for this attempt).
        reason: said in the log line and, if it comes to that, the dead letter.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and (
            isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0
        ):
            raise ValueError(f"Retry(delay=) must be a number of seconds >= 0, got {delay!r}")
        super().__init__(reason or (f"retry in {delay:g}s" if delay is not None else "retry"))
        self.delay = delay
        self.reason = reason

    def __reduce__(self) -> tuple[type[Retry], tuple[float | None, str]]:
        return type(self), (self.delay, self.reason)


class BrokerError(TidingsError):
    """The broker or the connection to it failed.

    Examples: a wrong password at connection time, a reply that is not what the
    command calls for (the connection is then dropped and made again), ``count()``
    while disconnected for longer than ``publish_timeout``. The connection supervisor
    reports these in the status events and reconnects with back-off.
    """


class ReplyError(BrokerError):
    """The server refused one command; the connection is fine.

    Only that command failed: ``register`` of a channel an ACL user may not read,
    a ``PUBLISH`` to a channel it may not write. Transport failures are never
    reported as a ``ReplyError``.

    Attributes:
        code: the server's first word, e.g. ``"NOPERM"``, ``"MOVED"``, ``"WRONGTYPE"``
            (``"ERR"`` for a generic error).
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[ReplyError], tuple[str, str]]:
        return type(self), (str(self), self.code)
