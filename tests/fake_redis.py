"""A fake Redis server that can misbehave: malformed replies on cue.

It speaks the RESP2 subset tidings uses (the handshake, SUBSCRIBE and friends,
PING, PUBLISH, PUBSUB NUMSUB/NUMPAT/CHANNELS) and, left alone, behaves like a small
Redis: a PUBLISH on one connection reaches the ``message`` / ``pmessage`` pushes of
every connection subscribed, and is answered with the receiver count.

What it sends is chosen by a :class:`Script`. The base class is the well-behaved
server; a script overrides hooks that see the proper reply and return what to send
instead:

- :meth:`Script.after_handshake`: extra bytes right after the handshake replies;
- :meth:`Script.confirm`: the (P|UN)SUBSCRIBE confirmations;
- :meth:`Script.pong`: the reply to PING;
- :meth:`Script.publish_reply`: the reply to PUBLISH.

:class:`Hostile` injects a queue of :class:`Frame` per connection role (``"sub"`` /
``"pub"``, from the ``CLIENT SETNAME`` name), each at its point (``Frame.when``), and
then behaves well; :func:`seeded` builds one from a seed, with malformed-but-parsable
frames (bad pushes, wrong types, RESP3 types, unsolicited errors) and plainly
unparsable bytes. The server records what each connection received and was sent
(``FakeConnection.commands`` / ``sent`` / ``injected``, ``FakeRedis.injected``) and how
many connections it accepted (``FakeRedis.accepted``), so tests can assert that the
client reconnected.

::

    async with running_fake(seeded(7, channel=b"t:chan")) as fake:
        async with tidings.Channels(fake.url, namespace="t") as channels: ...
        assert fake.accepted > 2
"""

from __future__ import annotations

import fnmatch
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.abc
import hiredis

from tests.faults import LocalServer

__all__ = [
    "NIL",
    "FakeConnection",
    "FakeRedis",
    "Frame",
    "Hostile",
    "Script",
    "array",
    "bulk",
    "confirmation",
    "describe",
    "error",
    "integer",
    "message",
    "running_fake",
    "seeded",
    "simple",
]

# -- RESP encoding -------------------------------------------------------------------

NIL = b"$-1\r\n"
NIL_ARRAY = b"*-1\r\n"


def bulk(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def simple(text: str) -> bytes:
    return b"+%b\r\n" % text.encode()


def error(text: str) -> bytes:
    return b"-%b\r\n" % text.encode()


def array(*items: bytes) -> bytes:
    """An array of already encoded items."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def message(channel: bytes, payload: bytes) -> bytes:
    """A well-formed ``message`` push."""
    return array(bulk(b"message"), bulk(channel), bulk(payload))


def confirmation(kind: bytes, name: bytes | None, count: int) -> bytes:
    """A well-formed (p)(un)subscribe confirmation."""
    return array(bulk(kind), NIL if name is None else bulk(name), integer(count))


# -- scripts -------------------------------------------------------------------------

When = Literal[
    "after_handshake",  # appended to the handshake replies (unsolicited)
    "after_subscribe",  # appended to a (P)SUBSCRIBE's confirmations (unsolicited)
    "instead_of_confirmation",  # replaces a (P)SUBSCRIBE's confirmations
    "instead_of_pong",  # replaces the reply to PING
    "instead_of_reply",  # replaces the reply to PUBLISH
    "before_reply",  # sent before the reply to PUBLISH (shifts the replies)
]


@dataclass(frozen=True)
class Frame:
    """Bytes to inject, where, and a label for messages."""

    data: bytes
    label: str
    when: When = "after_subscribe"

    def __str__(self) -> str:
        return f"{self.when}:{self.label}"


class Script:
    """A well-behaved Redis. Override the hooks to misbehave.

    Each hook gets the connection and the proper reply, and returns the bytes to send.
    """

    def after_handshake(self, conn: FakeConnection) -> bytes:
        return b""

    def confirm(self, conn: FakeConnection, kind: bytes, proper: bytes) -> bytes:
        return proper

    def pong(self, conn: FakeConnection, proper: bytes) -> bytes:
        return proper

    def publish_reply(self, conn: FakeConnection, proper: bytes) -> bytes:
        return proper

    @property
    def exhausted(self) -> bool:
        """True once nothing is left to inject (the server behaves from then on)."""
        return True


class Hostile(Script):
    """Inject ``sub`` frames on subscriber connections, ``pub`` frames on publishers.

    Each queue is consumed in order, one frame at a time, when its head's
    :attr:`Frame.when` point comes on a connection of that role; once both queues are
    empty the server behaves well, so a client that reconnects recovers.
    """

    def __init__(self, sub: Iterable[Frame] = (), pub: Iterable[Frame] = ()) -> None:
        self.pending: dict[str, deque[Frame]] = {"sub": deque(sub), "pub": deque(pub)}
        self.planned: dict[str, tuple[Frame, ...]] = {
            role: tuple(queue) for role, queue in self.pending.items()
        }

    def __repr__(self) -> str:
        planned = {role: [str(f) for f in frames] for role, frames in self.planned.items()}
        return f"Hostile({planned})"

    @property
    def exhausted(self) -> bool:
        return not any(self.pending.values())

    def _take(self, conn: FakeConnection, *points: When) -> Frame | None:
        queue = self.pending.get(conn.role or "")
        if not queue or queue[0].when not in points:
            return None
        frame = queue.popleft()
        conn.injected.append(frame)
        conn.server.injected.append((conn.role or "?", str(frame)))
        return frame

    def after_handshake(self, conn: FakeConnection) -> bytes:
        frame = self._take(conn, "after_handshake")
        return b"" if frame is None else frame.data

    def confirm(self, conn: FakeConnection, kind: bytes, proper: bytes) -> bytes:
        if kind not in (b"subscribe", b"psubscribe"):
            return proper
        frame = self._take(conn, "after_subscribe", "instead_of_confirmation")
        if frame is None:
            return proper
        return frame.data if frame.when == "instead_of_confirmation" else proper + frame.data

    def pong(self, conn: FakeConnection, proper: bytes) -> bytes:
        frame = self._take(conn, "instead_of_pong")
        return proper if frame is None else frame.data

    def publish_reply(self, conn: FakeConnection, proper: bytes) -> bytes:
        frame = self._take(conn, "instead_of_reply", "before_reply")
        if frame is None:
            return proper
        return frame.data if frame.when == "instead_of_reply" else frame.data + proper


# -- seeded malformed frames ---------------------------------------------------------

#: Bytes no RESP parser accepts.
UNPARSABLE: tuple[tuple[str, bytes], ...] = (
    ("garbage", b"?garbage\r\n"),
    ("http", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    ("bad-bulk-length", b"$abc\r\n"),
    ("bad-array-length", b"*x\r\n"),
    ("bad-integer", b":12a\r\n"),
    ("bulk-length-out-of-range", b"$-2\r\n"),
    ("binary", b"\x00\x01\x02\xff\r\n"),
    ("blob-error", b"!3\r\nERR\r\n"),
    ("garbage-inside-array", b"*2\r\n$7\r\nmessage\r\n?x\r\n"),
)


def _resp3(rng: random.Random) -> tuple[str, bytes]:
    """A RESP3 type on a RESP2 connection; none of them is an integer or a valid push."""
    return rng.choice(
        [
            ("resp3-double", b",1.5\r\n"),
            ("resp3-true", b"#t\r\n"),
            ("resp3-false", b"#f\r\n"),
            ("resp3-null", b"_\r\n"),
            ("resp3-map", b"%1\r\n" + bulk(b"a") + bulk(b"b")),
            ("resp3-empty-map", b"%0\r\n"),
            ("resp3-set", b"~1\r\n" + integer(1)),
            ("resp3-push", b">2\r\n" + bulk(b"message") + bulk(b"x")),
            ("resp3-push-empty", b">0\r\n"),
            ("resp3-big-number", b"(12345678901234567890\r\n"),
            ("resp3-verbatim", b"=7\r\ntxt:one\r\n"),
        ]
    )


def _not_bulk(rng: random.Random) -> tuple[str, bytes]:
    """Something where a bulk string belongs."""
    return rng.choice(
        [
            ("int", integer(rng.randint(-5, 10**6))),
            ("nil", NIL),
            ("nil-array", NIL_ARRAY),
            ("array", array(bulk(b"a"), bulk(b"b"))),
            ("empty-array", array()),
            ("nested-array", array(array(bulk(b"x"), integer(1)))),
            ("error", error("ERR in a field")),
            ("double", b",2.5\r\n"),
            ("map", b"%1\r\n" + bulk(b"k") + bulk(b"v")),
            ("bool", b"#f\r\n"),
            ("null", b"_\r\n"),
        ]
    )


def _sub_frame(rng: random.Random, channel: bytes, payload: bytes) -> tuple[str, bytes]:
    """A frame that no subscriber connection should accept."""
    kind = rng.choice(
        [
            "channel",
            "payload",
            "too-few",
            "too-many",
            "pmessage",
            "unknown-kind",
            "top-level",
            "error",
            "resp3",
            "unparsable",
            "confirmation",
        ]
    )
    if kind == "channel":
        what, bad = _not_bulk(rng)
        return f"message-channel-{what}", array(bulk(b"message"), bad, bulk(payload))
    if kind == "payload":
        what, bad = _not_bulk(rng)
        return f"message-payload-{what}", array(bulk(b"message"), bulk(channel), bad)
    if kind == "too-few":
        items = [bulk(b"message"), bulk(channel)][: rng.randint(0, 2)]
        return f"message-{len(items)}-elements", array(*items)
    if kind == "too-many":
        extra = [bulk(b"extra"), integer(1), array()][: rng.randint(1, 3)]
        items = [bulk(b"message"), bulk(channel), bulk(payload), *extra]
        return f"message-{len(items)}-elements", array(*items)
    if kind == "pmessage":
        what, bad = _not_bulk(rng)
        return rng.choice(
            [
                (
                    f"pmessage-pattern-{what}",
                    array(bulk(b"pmessage"), bad, bulk(channel), bulk(payload)),
                ),
                (
                    f"pmessage-channel-{what}",
                    array(bulk(b"pmessage"), bulk(b"*"), bad, bulk(payload)),
                ),
                ("pmessage-3-elements", array(bulk(b"pmessage"), bulk(b"*"), bulk(channel))),
                ("pmessage-1-element", array(bulk(b"pmessage"))),
            ]
        )
    if kind == "unknown-kind":
        name = rng.choice([b"mesage", b"MESSAGE", b"smessage", b"invalidate", b"", b"\xff\xfe"])
        return f"push-kind-{name!r}", array(bulk(name), bulk(channel), bulk(payload))
    if kind == "top-level":
        return rng.choice(
            [
                ("empty-array", array()),
                ("nil-array", NIL_ARRAY),
                ("nil-bulk", NIL),
                ("integer", integer(7)),
                ("simple-ok", simple("OK")),
                ("bulk", bulk(b"hello")),
                ("array-of-int", array(integer(1), integer(2), integer(3))),
                ("nested-array", array(array(bulk(b"message")), bulk(channel), bulk(payload))),
                ("kind-is-map", array(b"%1\r\n" + bulk(b"a") + bulk(b"b"), bulk(channel))),
            ]
        )
    if kind == "error":
        return "error-reply", error(rng.choice(["ERR unsolicited", "LOADING busy", "OOM no"]))
    if kind == "resp3":
        return _resp3(rng)
    if kind == "unparsable":
        return rng.choice(UNPARSABLE)
    # A confirmation of the wrong shape: a count that is not an integer, a wrong arity.
    what, bad = _not_bulk(rng)
    return rng.choice(
        [
            (f"confirmation-count-{what}", array(bulk(b"subscribe"), bulk(channel), bad))
            if what != "int"
            else ("confirmation-count-bulk", array(bulk(b"subscribe"), bulk(channel), bulk(b"1"))),
            ("confirmation-2-elements", array(bulk(b"subscribe"), bulk(channel))),
            (
                "confirmation-4-elements",
                array(bulk(b"subscribe"), bulk(channel), integer(1), integer(1)),
            ),
            ("confirmation-name-int", array(bulk(b"subscribe"), integer(5), integer(1))),
            ("unexpected-unsubscribe", confirmation(b"unsubscribe", channel, 0)),
        ]
    )


def _pub_frame(rng: random.Random) -> tuple[str, bytes]:
    """Something that is not an integer where a PUBLISH reply belongs."""
    kind = rng.choice(["not-int", "resp3", "unparsable"])
    if kind == "resp3":
        return _resp3(rng)
    if kind == "unparsable":
        return rng.choice(UNPARSABLE)
    return rng.choice(
        [
            ("bulk", bulk(b"foo")),
            ("numeric-bulk", bulk(b"1")),
            ("nil-bulk", NIL),
            ("nil-array", NIL_ARRAY),
            ("empty-array", array()),
            ("array-of-int", array(integer(1))),
            ("nested-array", array(array(integer(1)))),
            ("simple-ok", simple("OK")),
            ("simple-number", simple("1")),
        ]
    )


def seeded(seed: int, channel: bytes, payload: bytes = b"{}", *, limit: int = 2) -> Hostile:
    """A :class:`Hostile` script drawn from ``random.Random(seed)``.

    1 to ``limit`` subscriber frames and 1 to ``limit`` publisher frames. Every
    subscriber frame is one no client may accept (a lost connection, then a
    reconnect); the first comes at the first subscription, so every seed breaks at
    least one connection. Publisher frames are non-integers or unparsable bytes where
    a PUBLISH reply belongs (or, now and then, an error reply: a refused publish),
    replacing the reply, sent before it, or (the first only) unsolicited after the
    handshake.
    ``channel`` is the broker name subscribed to; ``payload`` a valid payload for it.
    """
    rng = random.Random(seed)
    sub: list[Frame] = []
    for i in range(rng.randint(1, limit)):
        label, data = _sub_frame(rng, channel, payload)
        if rng.random() < 0.3:  # valid messages first: a batch cut short by the bad frame
            data = message(channel, payload) * rng.randint(1, 3) + data
            label = f"valid-then-{label}"
        at: list[When] = ["after_subscribe", "after_subscribe", "instead_of_confirmation"]
        if i > 0:  # each subscriber frame ends a connection: the next one takes this
            at += ["after_handshake", "instead_of_pong"]
        if label.endswith("error-reply"):
            # Unsolicited only: in reply to a command, an error is a refusal, not malformed.
            at = [point for point in at if point in ("after_subscribe", "after_handshake")]
        sub.append(Frame(data, label, rng.choice(at)))
    pub: list[Frame] = []
    for i in range(rng.randint(1, limit)):
        points: list[When] = ["instead_of_reply"] * 3 + ["before_reply"]
        if i == 0:  # later, no new connection might come to take it
            points.append("after_handshake")
        when = rng.choice(points)
        if when == "instead_of_reply" and rng.random() < 0.1:
            label, data = "error-reply", error("ERR refused")
        else:
            label, data = _pub_frame(rng)
        pub.append(Frame(data, label, when))
    return Hostile(sub, pub)


# -- the server ----------------------------------------------------------------------

_HANDSHAKE = frozenset({b"AUTH", b"SELECT", b"HELLO"})


class FakeConnection:
    """One accepted connection and what it saw."""

    def __init__(self, server: FakeRedis, stream: anyio.abc.SocketStream, index: int) -> None:
        self.server = server
        self.stream = stream
        self.index = index
        #: ``"sub"`` or ``"pub"`` (from CLIENT SETNAME ``...-sub``), else None.
        self.role: str | None = None
        self.name: bytes | None = None
        self.commands: list[list[bytes]] = []
        self.sent: list[bytes] = []
        self.injected: list[Frame] = []
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()
        self.closed = False
        self._lock = anyio.Lock()
        self._scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return (
            f"<FakeConnection #{self.index} {self.role} injected={[str(f) for f in self.injected]}>"
        )

    @property
    def subscribed(self) -> bool:
        return bool(self.channels or self.patterns)

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False if the connection is gone."""
        if not data or self.closed:
            return False
        async with self._lock:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.closed = True
                return False
        self.sent.append(data)
        return True

    def hang_up(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class FakeRedis(LocalServer):
    """The server. Start it with :func:`running_fake` (or ``tg.start(fake.run)``)."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script if script is not None else Script()
        self.accepted = 0
        self.connections: list[FakeConnection] = []
        #: ``(role, str(frame))`` for every frame injected, in order.
        self.injected: list[tuple[str, str]] = []

    def live(self, role: str | None = None) -> list[FakeConnection]:
        return [c for c in self.connections if not c.closed and (role is None or c.role == role)]

    def roles(self) -> list[str | None]:
        """The role of every connection accepted, in order."""
        return [c.role for c in self.connections]

    async def push(self, data: bytes, role: str = "sub") -> int:
        """Send raw bytes to every live connection of ``role``; how many got them."""
        sent = 0
        for conn in self.live(role):
            sent += await conn.send(data)
        return sent

    def hang_up(self, role: str | None = None) -> int:
        """Close every live connection (of ``role``); how many there were."""
        conns = self.live(role)
        for conn in conns:
            conn.hang_up()
        return len(conns)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        conn = FakeConnection(self, stream, len(self.connections))
        self.connections.append(conn)
        reader = hiredis.Reader()
        try:
            with anyio.CancelScope() as conn._scope:
                async with stream:
                    while True:
                        reader.feed(await stream.receive())
                        out: list[bytes] = []
                        while (command := reader.gets()) is not False:
                            out.append(await self._command(conn, command))
                        await conn.send(b"".join(out))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        except hiredis.ProtocolError:  # the client sent something that is not RESP
            pass
        finally:
            conn.closed = True

    async def _command(self, conn: FakeConnection, command: object) -> bytes:
        if not isinstance(command, list) or not command:
            return error("ERR Protocol error: expected an array of bulk strings")
        args = [a if isinstance(a, bytes) else str(a).encode() for a in command]
        conn.commands.append(args)
        name = args[0].upper()
        script = self.script
        if name in _HANDSHAKE:
            return simple("OK")
        if name == b"CLIENT" and len(args) == 3 and args[1].upper() == b"SETNAME":
            conn.name = args[2]
            role = args[2].rsplit(b"-", 1)[-1]
            conn.role = role.decode() if role in (b"sub", b"pub") else None
            return simple("OK") + script.after_handshake(conn)
        if name in (b"SUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE"):
            return script.confirm(conn, name.lower(), self._subscription(conn, name, args[1:]))
        if name == b"PING":
            if conn.subscribed:
                proper = array(bulk(b"pong"), bulk(args[1] if len(args) > 1 else b""))
            else:
                proper = bulk(args[1]) if len(args) > 1 else simple("PONG")
            return script.pong(conn, proper)
        if name == b"PUBLISH" and len(args) == 3:
            received = await self._publish(args[1], args[2])
            return script.publish_reply(conn, integer(received))
        if name == b"PUBSUB" and len(args) >= 2:
            return self._pubsub(args[1].upper(), args[2:])
        return error(f"ERR unknown command '{name.decode(errors='replace')}'")

    def _subscription(self, conn: FakeConnection, name: bytes, names: list[bytes]) -> bytes:
        kind = name.lower()
        pattern = kind.startswith(b"p")
        subs = conn.patterns if pattern else conn.channels
        replies = []
        if kind.endswith(b"unsubscribe"):
            targets: Sequence[bytes | None] = names or sorted(subs) or [None]
            for target in targets:
                if target is not None:
                    subs.discard(target)
                replies.append(confirmation(kind, target, len(conn.channels) + len(conn.patterns)))
        else:
            for target in names:
                subs.add(target)
                replies.append(confirmation(kind, target, len(conn.channels) + len(conn.patterns)))
        return b"".join(replies)

    async def _publish(self, channel: bytes, payload: bytes) -> int:
        received = 0
        for conn in self.live():
            if channel in conn.channels:
                received += await conn.send(message(channel, payload))
            for pattern in sorted(conn.patterns):
                if _matches(pattern, channel):
                    push = array(bulk(b"pmessage"), bulk(pattern), bulk(channel), bulk(payload))
                    received += await conn.send(push)
        return received

    def _pubsub(self, sub: bytes, args: list[bytes]) -> bytes:
        if sub == b"NUMSUB":
            items = []
            for channel in args:
                count = sum(channel in c.channels for c in self.live())
                items += [bulk(channel), integer(count)]
            return array(*items)
        if sub == b"NUMPAT":
            return integer(len({p for c in self.live() for p in c.patterns}))
        if sub == b"CHANNELS":
            active = sorted({ch for c in self.live() for ch in c.channels})
            if args:
                active = [ch for ch in active if _matches(args[0], ch)]
            return array(*(bulk(ch) for ch in active))
        return error("ERR unknown PUBSUB subcommand")


def _matches(pattern: bytes, name: bytes) -> bool:
    return fnmatch.fnmatchcase(name.decode("latin-1"), pattern.decode("latin-1"))


@asynccontextmanager
async def running_fake(script: Script | None = None) -> AsyncIterator[FakeRedis]:
    """A fake server on a free port, serving until the block ends."""
    fake = FakeRedis(script)
    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(fake.run)
            yield fake
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Raise what the test raised, bare (the server task itself never fails).
        failure = group
        while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
            failure = failure.exceptions[0]
    if failure is not None:
        raise failure


def describe(fake: FakeRedis) -> str:
    """What the fake did, for assertion messages."""
    return f"accepted={fake.accepted} roles={fake.roles()} injected={fake.injected}"
