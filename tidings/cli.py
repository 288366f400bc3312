"""The ``tidings`` command: look at live channels, publish, run an application.

::

    tidings listen orders 'created' 'up*'       # JSON lines on stdout until Ctrl-C
    tidings listen orders --durable --since all # a durable channel's log, then live
    tidings listen jobs --durable --group mail  # a work-queue member that prints
    tidings publish orders created '{"id": 1}'  # prints the broker's receiver count
    tail -f events.jsonl | tidings publish orders created -   # each line as it comes
    tidings channels 'ord*'                     # active channels and subscribers
    tidings inspect orders                      # a durable channel's log, groups, dead letters
    tidings dead orders --requeue               # a durable channel's dead letters
    tidings run myapp.worker:main               # run an app; SIGTERM drains it
    tidings demo

The store URL comes from ``--url``, else ``$TIDINGS_URL``, else
``redis://localhost:6379/0`` (``demo`` runs on the embedded ``memory://``: an
in-process hub is private to one process, so it is no default for the others).
Errors end the command with one line on stderr and a non-zero exit code: 2 for bad
usage (found before any I/O, naming the flag), 1 for a failure, 130 (143) when
SIGINT (SIGTERM) ends it; ``run`` shows the traceback of a crash in the
application's code (see ``tidings._runner``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TextIO, TypeVar

import anyio

from . import __version__
from ._runtime.lifecycle import runtime_of
from .actors.callbacks import Meta
from .brokers.base import ConnectionLost, GroupInfo, Publisher, StreamInfo, dead_key
from .channels import Channel, Channels
from .errors import BrokerError, ReplyError, TidingsError
from .policies.headers import DELIVERIES, ERROR, GROUP
from .policies.names import Namespace, check_namespace
from .policies.streams import Retention, format_id, parse_id
from .pubsub import PubSub
from .store import create_store
from .supervisors.connection import describe

__all__ = ["main"]

#: Exit codes: 0 done (or nobody reads stdout any more), 1 a runtime failure
#: (connection, broker), 2 bad usage (argparse's own), 130 interrupted.
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

#: The store of every command but ``demo`` when neither --url nor $TIDINGS_URL says.
DEFAULT_URL = "redis://localhost:6379/0"
#: Seconds to wait for the broker when --timeout does not say.
DEFAULT_TIMEOUT = 5.0

#: What ``publish`` prints, in the help and the docs' words.
RECEIVERS = (
    "the broker's receiver count: how many subscriber connections (clients) it "
    "delivered the event to, not how many callbacks or processes handled it; 0 means "
    "nobody was listening (on a --durable channel the event is stored all the same)"
)

H = TypeVar("H", Channels, PubSub)


class CommandError(Exception):
    """A failure to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# -- argument types: a bad value is argparse's one-line usage error, naming the flag ---


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argument type that runs the library's own check of a name (before any I/O)."""

    def check_text(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check_text


def _nonempty(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return text

    return check


#: A channel name is valid in any namespace if it is valid in none.
_channel = _checked(Namespace("").broker_name)
_namespace = _checked(check_namespace)
_stream_id = _checked(lambda text: parse_id(text, "a stream id"))


def _since(text: str) -> str | dt.datetime:
    """``new``, ``all``, a stream id, or an ISO 8601 time with its zone."""
    if text in ("new", "all"):
        return text
    try:
        return format_id(parse_id(text))
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected new, all, a stream id like 1700000000000-0 or a time like "
            f"2024-05-01T12:00:00+00:00, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time's zone (+00:00, or Z): {text!r}")
    return when


#: ``publish … -``: the data is each line of stdin; no DATA at all: a usage error.
STDIN, MISSING = object(), object()


def _data(text: str) -> Any:
    if text == "-":
        return STDIN
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r:.60}") from None


# -- the parser -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Publish/subscribe events on an embedded broker or Redis.",
        epilog=f"The store URL comes from --url, else $TIDINGS_URL, else {DEFAULT_URL} "
        "(demo: memory://). Exit status: 0 done, 1 failed, 2 bad usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    # The connection options go before or after the command: `tidings --url X listen c`
    # and `tidings listen --url X c` both work (the command's copy only overrides
    # when it is given).
    common = argparse.ArgumentParser(add_help=False)
    for target, default in ((parser, None), (common, argparse.SUPPRESS)):
        target.add_argument(
            "--url",
            default=default,
            help="store URL: redis://host:6379/0, rediss://…, unix:///path, memory:// "
            f"(default: $TIDINGS_URL, else {DEFAULT_URL})",
        )
        target.add_argument(
            "--namespace", type=_namespace, default=default, help="channel namespace (prefix)"
        )
        target.add_argument(
            "--timeout",
            type=_seconds,
            default=default,
            help="seconds to wait for the broker: to connect, and for each reply "
            f"(default {DEFAULT_TIMEOUT:g})",
        )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_listen, _add_publish, _add_channels, _add_inspect, _add_dead):
        add(commands, common)
    _add_run(commands)
    commands.add_parser(
        "demo",
        help="a short tour of the library on the embedded broker",
        description="A short tour of the library on the embedded broker.",
    )
    return parser


Commands = Any  # argparse's private _SubParsersAction


def _add_listen(commands: Commands, common: argparse.ArgumentParser) -> None:
    listen = commands.add_parser(
        "listen",
        parents=[common],
        help="print a channel's events as JSON lines until Ctrl-C",
        description='Print events as JSON lines on stdout (with their "id" on a '
        "durable channel); status changes go to stderr. Ctrl-C or SIGTERM ends it "
        "(exit 130 and 143): a group member hands back what it holds, a named "
        "consumer saves its place.",
    )
    listen.add_argument(
        "channel", metavar="CHANNEL", type=_channel, help="the channel to listen to"
    )
    listen.add_argument(
        "events",
        nargs="*",
        default=["*"],
        type=_nonempty("an event pattern"),
        metavar="EVENT-GLOB",
        help="event patterns (default: *)",
    )
    durable = listen.add_argument_group(
        "durable channels", "--since, --consumer and --group need --durable."
    )
    durable.add_argument(
        "--durable", action="store_true", help="the channel is durable: read its log"
    )
    durable.add_argument(
        "--since",
        type=_since,
        metavar="{new,all,ID,TIME}",
        help="where to start: new (the default), all (everything the log keeps), "
        "after a stream id, or from an ISO time with its zone",
    )
    who = durable.add_mutually_exclusive_group()
    who.add_argument(
        "--consumer",
        type=_nonempty("a consumer name"),
        metavar="NAME",
        help="a named consumer: its place is saved in Redis, and the next listen with "
        "this name resumes after it (--since applies the first time only)",
    )
    who.add_argument(
        "--group",
        type=_nonempty("a group name"),
        metavar="NAME",
        help="a member of this work-queue group: each event goes to one member, and "
        "is acknowledged once printed",
    )
    listen.set_defaults(usage_error=listen.error)


def _add_publish(commands: Commands, common: argparse.ArgumentParser) -> None:
    publish = commands.add_parser(
        "publish",
        parents=[common],
        help="publish an event and print the broker's receiver count",
        # DATA is required (a usage error of our own words when it is missing).
        usage="%(prog)s [-h] [--url URL] [--namespace NAMESPACE] [--timeout TIMEOUT] "
        "[--durable] CHANNEL EVENT DATA",
        description="Publish EVENT on CHANNEL with DATA, a JSON value (null for "
        "none), and print " + RECEIVERS + ". DATA '-' reads stdin: each line is one "
        "JSON value, published as it comes (blank lines skipped), its count printed "
        "at once; a line that is not JSON stops it (exit 2), the lines before it "
        "published.",
    )
    publish.add_argument("channel", metavar="CHANNEL", type=_channel)
    publish.add_argument("event", metavar="EVENT", type=_nonempty("an event name"))
    publish.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        default=MISSING,
        type=_data,
        help="a JSON value (null for none), or - for one per line of stdin",
    )
    publish.add_argument(
        "--durable",
        action="store_true",
        help="the channel is durable: store the event in its log too (without "
        "trimming it: the command knows no retention)",
    )
    publish.set_defaults(usage_error=publish.error)


def _add_channels(commands: Commands, common: argparse.ArgumentParser) -> None:
    channels = commands.add_parser(
        "channels",
        parents=[common],
        help="list active channels and their subscribers",
        description="List channels with subscribers on the broker (within --namespace).",
    )
    channels.add_argument(
        "pattern",
        metavar="PATTERN",
        nargs="?",
        default="*",
        type=_nonempty("a pattern"),
        help="a glob (default: *)",
    )


def _add_inspect(commands: Commands, common: argparse.ArgumentParser) -> None:
    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="show a durable channel's log, groups and dead letters (or list the logs)",
        description="Show a durable channel's log (length, first and last id), its "
        "consumer groups and their consumers, and its dead letters. Without CHANNEL, "
        "list the durable channels' logs within --namespace.",
    )
    inspect.add_argument(
        "channel",
        metavar="CHANNEL",
        nargs="?",
        default=None,
        type=_channel,
        help="a durable channel",
    )


def _add_dead(commands: Commands, common: argparse.ArgumentParser) -> None:
    dead = commands.add_parser(
        "dead",
        parents=[common],
        help="list, requeue or purge a durable channel's dead letters",
        description="List the newest dead letters of a durable channel (one line each: "
        "id, event, group, deliveries, error). --requeue appends them to the channel's "
        "log again, for the group each died in; --purge deletes them; both act on the "
        "--id given, else on all of them, and print how many.",
    )
    dead.add_argument("channel", metavar="CHANNEL", type=_channel, help="a durable channel")
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--requeue", action="store_true", help="requeue them")
    action.add_argument("--purge", action="store_true", help="delete them")
    dead.add_argument(
        "--id",
        dest="ids",
        action="append",
        type=_stream_id,
        metavar="ID",
        help="a dead letter's id (repeatable; with --requeue or --purge; default: all)",
    )
    dead.add_argument(
        "--count", type=_count, default=100, help="how many to list, the newest (default 100)"
    )
    dead.set_defaults(usage_error=dead.error)


def _add_run(commands: Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run an application's async function; SIGINT/SIGTERM drain it",
        description="Import MODULE (the current directory is on the path, as for "
        "python -m) and run its async FUNCTION, which takes no arguments. SIGINT or "
        "SIGTERM closes every running Channels/PubSub handler gracefully (work-queue "
        "events not started are handed back, callbacks in hand finish within the "
        "handler's close_timeout, the group member leaves), then cancels the function; "
        "a second signal stops at once. Exit status: 0 when the function returns or "
        "after a drain, 1 if it raises (with the traceback), 2 for a bad MODULE:FUNCTION, "
        "130 (143) when a second SIGINT (SIGTERM) forces the exit.",
    )
    run.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. myapp.worker:main")
    run.add_argument(
        "--backend",
        choices=("trio", "asyncio"),
        default="trio",
        help="the event loop (default: trio)",
    )


def _check_usage(args: argparse.Namespace) -> None:
    """The checks argparse cannot make on one argument alone (it exits 2)."""
    if args.command == "listen":
        given = [f"--{flag}" for flag in ("since", "consumer", "group") if getattr(args, flag)]
        if given and not args.durable:
            args.usage_error(
                f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --durable "
                "(only a durable channel keeps a log to read and to share)"
            )
    elif args.command == "publish" and args.data is MISSING:
        args.usage_error(
            "DATA is missing: give a JSON value (null for none), or - to publish each line of stdin"
        )
    elif args.command == "dead" and args.ids is not None and not (args.requeue or args.purge):
        args.usage_error("--id goes with --requeue or --purge")


# -- connecting ---------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The handler options of every command that connects: --timeout bounds the first
    connection attempt (and each one after), and every reply; a first attempt that
    fails ends the command with its cause rather than retrying in silence."""
    return {"connect_timeout": args.timeout, "publish_timeout": args.timeout, "fail_fast": True}


@asynccontextmanager
async def _connected(handler: H, wait: float) -> AsyncIterator[H]:
    """Run ``handler`` once connected; a failed first attempt is a one-line error."""
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(handler)
        except BrokerError as exc:  # fail_fast: the first attempt failed, cause chained
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise CommandError(_cannot_connect(handler.store.url, cause, wait)) from None
        # Connected then (fail_fast), unless lost at once since: wait a little for it.
        with anyio.move_on_after(wait) as waited:
            await handler.connect()
        if waited.cancelled_caught:
            raise CommandError(f"cannot connect to {handler.store.url} within {wait:g}s")
        yield handler


#: Reasons of ``ssl.SSLError`` for a peer that answered the handshake in plain text.
_NOT_TLS = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"}


def _cannot_connect(url: str, cause: BaseException, timeout: float) -> str:
    """Why the first connection failed, in one line, with a hint when the TLS setting
    looks wrong: a plain server does not answer a TLS handshake (or answers it in
    plain text); a TLS server resets or stalls a plain connection, or answers it
    with bytes that are not RESP."""
    if isinstance(cause, TimeoutError):
        text = f"no answer from {url} within {timeout:g}s while connecting"
    else:
        text = f"cannot connect to {url}: {describe(cause)}"
    scheme = url.partition("://")[0]
    if scheme.startswith("rediss"):
        if isinstance(cause, TimeoutError) or (
            isinstance(cause, ssl.SSLError) and cause.reason in _NOT_TLS
        ):
            text += f" (the server does not speak TLS? try {scheme.replace('rediss', 'redis')}://)"
    elif scheme.startswith("redis") and (
        isinstance(cause, TimeoutError | anyio.BrokenResourceError)
        or (isinstance(cause, ConnectionLost) and not isinstance(cause.__cause__, ReplyError))
    ):
        text += f" (is it a TLS port? try {scheme.replace('redis', 'rediss', 1)}://)"
    return text


def _channels(args: argparse.Namespace, durable: str | None = None) -> Channels:
    """A handler for a command (no retention of its own: it trims no log)."""
    return Channels(
        args.url,
        namespace=args.namespace,
        durable=None if durable is None else {durable: Retention()},
        **_options(args),
    )


# -- listen -----------------------------------------------------------------------------


async def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    channels = _channels(args, args.channel if args.durable else None)
    # Set when whoever reads stdout has gone (`tidings listen … | head -1`): there
    # is nobody left to listen for, so the command ends, quietly, as Unix tools do.
    gone = anyio.Event()

    def on_status(channel: Channel, event: str, data: dict[str, Any]) -> None:
        if event in ("connecting", "connected", "disconnected", "closed"):
            where = f" to {channels.store.url}" if event == "connected" else ""
            detail = f": {data['error']}" if data.get("error") else ""
            print(f"tidings: {event}{where}{detail}", file=err, flush=True)
        else:  # a gap, a dead letter, a slow consumer: what it says, as it says it
            print(f"tidings: {event}: {json.dumps(data, default=str)}", file=err, flush=True)

    def on_event(channel: Channel, event: str, data: Any, meta: Meta | None = None) -> None:
        fields = {"channel": channel.name, "event": event, "data": data}
        if meta is not None:
            fields = {"id": meta.id, **fields}
        if not _emit(out, json.dumps(fields)):
            gone.set()
            if args.group is not None:
                raise BrokenPipeError("stdout is closed")  # not printed: not acknowledged

    await channels.register(channels.status_channel.name, "*", on_status)
    async with _connected(channels, args.timeout):
        for pattern in args.events:
            if args.durable:
                await _register_with_ids(channels, args, pattern, on_event)
            else:
                await channels.register(args.channel, pattern, on_event)
        signum = await _until_signal(gone)
    # Leaving the block closed the handler: a group member handed back what it held
    # and left, a named consumer saved its place.
    return 0 if signum is None else 128 + signum


async def _register_with_ids(
    channels: Channels, args: argparse.Namespace, pattern: str, callback: Callable[..., None]
) -> None:
    """Register ``callback(channel, event, data, meta)`` on a durable channel.

    A `Channels.register()` callback is not told an event's id, and
    `Channels.subscribe()` takes no ``consumer=`` and acknowledges a group's event
    when the next one is taken: the command registers a callback that takes each
    delivery's metadata, as the iterators do (so a group's event is acknowledged,
    and a consumer's place moves, once its line is printed).
    """
    since = args.since or "new"
    wanted = channels._check(args.channel, pattern, callback, since, args.consumer, args.group)
    await channels._registry.register([dataclasses.replace(wanted, takes_meta=True)], "register")


async def _until_signal(stop: anyio.Event) -> int | None:
    """Wait for ``stop``, or SIGINT or SIGTERM; return the signal's number, if one came.

    Catching the signal (rather than letting Ctrl-C cancel everything) lets the
    caller leave its ``async with`` normally, so the handler closes gracefully.
    """
    received: int | None = None
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal received
                async for signum in signals:
                    received = signum
                    stop.set()
                    return

            tg.start_soon(watch)
            await stop.wait()
            tg.cancel_scope.cancel()
    return received


def _emit(out: TextIO, line: str) -> bool:
    """Print a line; False if nobody reads ``out`` any more."""
    try:
        print(line, file=out, flush=True)
    except BrokenPipeError:
        _silence(out)
        return False
    return True


def _silence(out: TextIO) -> None:
    """Point a closed stdout at /dev/null: what is still buffered, and the flush at
    exit, would raise BrokenPipeError again (and print it)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's StringIO)
        pass


# -- publish ----------------------------------------------------------------------------


async def _publish(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    channels = _channels(args, args.channel if args.durable else None)
    if args.data is not STDIN:
        async with _connected(channels, args.timeout) as ch:
            _emit(out, str(await ch.publish(args.channel, args.event, args.data)))
        return 0
    try:
        fd = stdin.fileno()
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read stdin: {exc}", EXIT_USAGE) from None
    published = 0

    async def publish(number: int, line: bytes) -> bool:
        nonlocal published
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise CommandError(
                f"stdin line {number} is not valid JSON: {exc}; stopped there "
                f"({published} published before it)",
                EXIT_USAGE,
            ) from None
        count = await channels.publish(args.channel, args.event, data)
        published += 1
        return _emit(out, str(count))

    async with _connected(channels, args.timeout):
        await _each_line(fd, publish)
    return 0


async def _each_line(fd: int, handle: Callable[[int, bytes], Awaitable[bool]]) -> None:
    """Call ``handle(number, line)`` for each non-blank line read from ``fd`` as it
    comes (numbered from 1, blank ones counted), until end of file or it returns False.

    The read blocks in a worker thread, not the event loop. It reads the raw file
    descriptor: a read abandoned at Ctrl-C holds no lock of ``sys.stdin``'s that the
    interpreter's exit would wait for (and after end of file no read is left).
    """
    pending, number = b"", 0
    while True:
        chunk = await anyio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
        *lines, pending = (pending + chunk).split(b"\n") if chunk else (pending, b"")
        for line in lines:
            number += 1
            if line.strip() and not await handle(number, line):
                return
        if not chunk:
            return


# -- channels, dead, inspect --------------------------------------------------------------


async def _list_channels(args: argparse.Namespace, out: TextIO) -> int:
    store = create_store(args.url)
    namespace = args.namespace if args.namespace is not None else store.namespace
    prefix = f"{namespace}:" if namespace else ""
    async with _connected(store.pubsub(**_options(args)), args.timeout) as pubsub:
        names = sorted(await pubsub.channels(prefix + args.pattern))
        counts = await pubsub.count(*names) if names else {}
    width = max([len("CHANNEL"), *(len(n) - len(prefix) for n in names)])
    print(f"{'CHANNEL':<{width}}  SUBSCRIBERS", file=out)
    for name in names:
        print(f"{name[len(prefix) :]:<{width}}  {counts[name]:>11}", file=out)
    return 0


async def _dead(args: argparse.Namespace, out: TextIO) -> int:
    # A requeue appends without trimming the log (the publishers' next publish trims
    # it as they declare).
    async with _connected(_channels(args, args.channel), args.timeout) as channels:
        if args.requeue:
            print(await channels.requeue_dead(args.channel, args.ids), file=out)
            return 0
        if args.purge:
            print(await channels.purge_dead(args.channel, args.ids), file=out)
            return 0
        letters = await channels.dead_letters(args.channel, args.count)
    rows = [
        (
            letter.id or "",
            letter.event or "?",  # (undecodable)
            letter.headers.get(GROUP, ""),
            letter.headers.get(DELIVERIES, ""),
            " ".join(letter.headers.get(ERROR, "").split()),
        )
        for letter in letters
    ]
    _table(out, ("ID", "EVENT", "GROUP", "DELIVERIES", "ERROR"), rows, right={3})
    return 0


#: Runs a command on a handler's command connection (``ConnectionSupervisor.query``).
Query = Callable[[str, Callable[[Publisher], Awaitable[Any]]], Awaitable[Any]]


async def _inspect(args: argparse.Namespace, out: TextIO) -> int:
    channels = _channels(args)
    namespace = Namespace(channels.namespace)
    key = None if args.channel is None else namespace.broker_name(args.channel)  # checked now
    async with _connected(channels, args.timeout):
        query: Query = runtime_of(channels).connection.query
        if key is None:
            rows = await _logs(query, namespace)
        else:
            log, dead, groups = await _log(query, key)
    if key is None:
        _table(out, ("CHANNEL", "LENGTH", "GROUPS", "DEAD"), rows, right={1, 2, 3})
        return 0
    if log is None and dead is None:
        raise CommandError(
            f"no log at {key!r}: {args.channel!r} is not a durable channel here "
            "(or nothing was published to it yet)"
        )
    for label, value in (
        ("channel", args.channel),
        ("stream", key),
        ("length", log.length if log is not None else 0),
        ("first id", log.first_id if log is not None and log.first_id else "-"),
        ("last id", log.last_id if log is not None and log.last_id else "-"),
        ("retention", "as the publishers declare it"),
        ("dead letters", dead.length if dead is not None else 0),
    ):
        print(f"{label:<13} {value}", file=out)
    print(file=out)
    _table(
        out,
        ("GROUP", "CONSUMERS", "PENDING", "LAG", "LAST-DELIVERED"),
        [
            (g.name, str(len(g.consumers)), str(g.pending), _maybe(g.lag), g.last_delivered)
            for g in groups
        ],
        right={1, 2, 3},
    )
    print(file=out)
    consumers = [
        (g.name, c.name, str(c.pending), "?" if c.idle is None else f"{c.idle:.1f}s")
        for g in groups
        for c in g.consumers
    ]
    _table(out, ("GROUP", "CONSUMER", "PENDING", "IDLE"), consumers, right={2, 3})
    return 0


async def _log(
    query: Query, key: str
) -> tuple[StreamInfo | None, StreamInfo | None, list[GroupInfo]]:
    """A durable channel's log, its dead letters' stream and its groups."""
    log = await query(f"inspect {key!r}", lambda p: p.stream_info(key))
    dead = await query(f"inspect {dead_key(key)!r}", lambda p: p.stream_info(dead_key(key)))
    groups = await query(f"inspect the groups of {key!r}", lambda p: p.group_info(key))
    return log, dead, groups


async def _logs(query: Query, namespace: Namespace) -> list[tuple[str, str, str, str]]:
    """A row for each durable channel's log under the namespace: its name, length,
    groups and dead letters."""
    prefix = f"{namespace.name}:" if namespace.name else ""
    match = _glob_escape(prefix) + "*"
    rows = []
    for key in await query("list the streams", lambda p: p.scan_streams(match)):
        if key.endswith(":dead") or "::" in key:
            continue  # dead letters, and tidings' own keys
        log, dead, groups = await _log(query, key)
        rows.append(
            (
                namespace.user_name(key),
                str(log.length if log is not None else 0),
                str(len(groups)),
                str(dead.length if dead is not None else 0),
            )
        )
    return rows


def _maybe(value: int | None) -> str:
    return "?" if value is None else str(value)


def _table(
    out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]
) -> None:
    """Print aligned columns (``right``: the indexes of those aligned right; the last
    one, unless it is, as it is)."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = [
            cell.rjust(w) if i in right else cell if i == len(row) - 1 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


# -- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        if (args.url, args.namespace, args.timeout) != (None, None, None):
            parser.error(
                "--url, --namespace and --timeout do not apply to run: the "
                "application opens its own channels"
            )
        from ._runner import run_target

        return run_target(args.target, args.backend, sys.stderr)
    _check_usage(args)
    if args.url is None:
        fallback = "memory://demo" if args.command == "demo" else DEFAULT_URL
        args.url = os.environ.get("TIDINGS_URL") or fallback  # (set but empty: unset)
    if args.timeout is None:
        args.timeout = DEFAULT_TIMEOUT
    # Library warnings (a lost connection, …) would repeat what status lines say.
    logging.getLogger("tidings").setLevel(logging.CRITICAL)
    try:
        return anyio.run(_command(args), backend="trio")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:  # Ctrl-C can land in several tasks at once
        if group.subgroup(KeyboardInterrupt) is not None:
            return EXIT_INTERRUPTED
        raise
    except CommandError as exc:
        return _fail(str(exc), exc.code)
    except (ValueError, TypeError) as exc:  # bad input: a URL, a name, data
        return _fail(str(exc), EXIT_USAGE)
    except (TidingsError, OSError) as exc:
        return _fail(str(exc), EXIT_FAILURE)


def _command(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs ``args.command``."""
    out = sys.stdout
    commands: dict[str, Callable[[], Awaitable[int]]] = {
        "listen": lambda: _listen(args, out, sys.stderr),
        "publish": lambda: _publish(args, out, sys.stdin),
        "channels": lambda: _list_channels(args, out),
        "dead": lambda: _dead(args, out),
        "inspect": lambda: _inspect(args, out),
    }
    if args.command == "demo":
        from ._demo import demo

        return lambda: demo(args.url)
    return commands[args.command]


def _fail(message: str, code: int) -> int:
    print(f"tidings: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
