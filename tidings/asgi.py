"""Channels to browsers: `EventStream`, an ASGI app serving Server-Sent Events and
WebSocket, with resume on durable channels.

```python
from tidings.asgi import EventStream

stream = EventStream(channels, allow=["room-*"])
app = Starlette(routes=[Mount("/events", stream)], lifespan=lifespan)
```

``GET /events/room-1?event=message`` is a ``text/event-stream``; a WebSocket at the
same path gets JSON text frames. See the "Fan-out to browsers" page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ._runtime.web import Access, Authorize, Receive, Scope, Send, Web
from .channels import Channels
from .policies.glob import compile_glob
from .policies.names import check_name

__all__ = ["EventStream"]


class EventStream:
    """An ASGI application that streams the events of a handler's channels to
    browsers, as Server-Sent Events (``GET {prefix}/{channel}``) or over a
    WebSocket at the same path.

    - ``?event=GLOB`` picks the events (default ``*``).
    - SSE frames are ``id: <Event.id>`` (durable channels), ``event: <event>``,
      ``data: <JSON of the data>``; WebSocket frames are the JSON text ``{"id",
      "channel", "event", "data"}`` (``"id"`` is null on plain channels).
    - **Resume**: on a durable channel, a reconnecting ``EventSource`` sends the
      ``Last-Event-ID`` header by itself (or give ``?last_event_id=``): the stream
      goes on after that id, every event once and in order, then live. When the log
      no longer holds that id, a ``gap`` frame comes first (SSE ``event: gap``;
      WebSocket ``"event": "gap"``), its data as the status channel's ``gap`` event.
    - **Access is closed by default**: only channels matching one of ``allow``
      (globs) are served, the rest are 404 (a WebSocket is refused); then
      ``authorize(scope, channel)`` (sync or async, the ASGI scope: headers,
      cookies, path) returning false gives 403.
    - **A slow client** has at most ``max_pending`` events waiting for it; one more,
      and its stream is ended (counted in `overflowed`; a WebSocket closes with
      1013). It never holds up its channel or the other clients; reconnecting, it
      resumes from the last id it got (durable channels).
    - SSE heartbeats (a ``:`` comment line) go out after ``heartbeat`` seconds
      without an event, so proxies keep idle streams open.
    - Clients share the handler's subscriptions: N browsers on one channel are one
      Redis subscription. Every stream ends when the handler closes, at
      `close()`, or at the lifespan's shutdown when this is the server's root app.

    The handler must be running (``async with channels``, typically in the app's
    lifespan) while requests come.

    Raises:
        TypeError: ``channels`` is not a `Channels`, ``allow`` is a single str,
            or ``authorize`` is not callable.
        ValueError: a bad glob in ``allow``, ``heartbeat`` not a positive number of
            seconds, or ``max_pending`` not an int >= 1.
    """

    def __init__(
        self,
        channels: Channels,
        *,
        allow: Iterable[str] = (),
        authorize: Authorize | None = None,
        heartbeat: float = 15.0,
        max_pending: int = 1000,
    ) -> None:
        if not isinstance(channels, Channels):
            raise TypeError(f"EventStream follows a tidings.Channels, not {channels!r:.80}")
        if isinstance(allow, str | bytes):
            raise TypeError(f"allow= takes a list of channel globs, not the str {allow!r}")
        globs = tuple(check_name(pattern, "allow= glob") for pattern in allow)
        for pattern in globs:
            compile_glob(pattern)  # a bad one fails here, naming itself
        if authorize is not None and not callable(authorize):
            raise TypeError(f"authorize= must be callable(scope, channel), not {authorize!r:.80}")
        if (
            isinstance(heartbeat, bool)
            or not isinstance(heartbeat, int | float)
            or not (0 < heartbeat < math.inf)
        ):
            raise ValueError(f"heartbeat= must be a positive number of seconds, not {heartbeat!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending= must be an int >= 1, not {max_pending!r}")
        self._web = Web(
            channels._web_source(),
            Access(globs, authorize),
            heartbeat=float(heartbeat),
            max_pending=max_pending,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        await self._web(scope, receive, send)

    @property
    def clients(self) -> int:
        """Streams open now."""
        return self._web.clients

    @property
    def overflowed(self) -> int:
        """Streams ended so far because their client fell ``max_pending`` behind."""
        return self._web.overflowed

    def close(self) -> None:
        """End every open stream now, and refuse new ones (503): for a server whose
        graceful shutdown waits for open responses before the lifespan ends."""
        self._web.close()

    def __repr__(self) -> str:
        return f"<EventStream clients={self.clients} overflowed={self.overflowed}>"
