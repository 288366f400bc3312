"""The ``tidings`` command: look at live channels, publish, and the demo.

::

    tidings listen orders 'created' 'up*'       # JSON lines on stdout until Ctrl-C
    tidings publish orders created '{"id": 1}'  # prints how many received it
    echo '{"id": 2}' | tidings publish orders created -
    tidings channels 'ord*'                     # active channels and subscribers
    tidings inspect orders                      # a durable channel's log, groups, dead letters
    tidings dead orders --requeue               # a durable channel's dead letters
    tidings demo

The store URL comes from ``--url``, else ``$TIDINGS_URL``, else
``redis://localhost:6379/0`` (``demo`` runs on the embedded ``memory://``: an
in-process hub is private to one process, so it is no default for the others).
Errors end the command with one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import anyio

from . import __version__
from ._runtime.lifecycle import runtime_of
from .brokers.base import GroupInfo, Publisher, StreamInfo, dead_key
from .channels import Channel, Channels
from .errors import TidingsError
from .policies.headers import DELIVERIES, ERROR, GROUP
from .policies.names import Namespace, check_name
from .policies.status import StatusType
from .policies.streams import Retention, parse_id
from .pubsub import PubSub
from .store import create_store

__all__ = ["main"]

#: Exit codes: 0 done (or nobody reads stdout any more), 1 a runtime failure
#: (connection, broker), 2 bad usage (argparse's own), 130 interrupted.
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

#: The store of every command but ``demo`` when neither --url nor $TIDINGS_URL says.
DEFAULT_URL = "redis://localhost:6379/0"


class CommandError(Exception):
    """A failure to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Publish/subscribe events on an embedded broker or Redis.",
        epilog=f"The store URL comes from --url, else $TIDINGS_URL, else {DEFAULT_URL} "
        "(demo: memory://).",
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
        target.add_argument("--namespace", default=default, help="channel namespace (prefix)")
        target.add_argument(
            "--timeout",
            type=float,
            default=default,
            help="seconds to wait for the broker (default 5)",
        )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listen = commands.add_parser(
        "listen",
        parents=[common],
        help="print a channel's events as JSON lines until Ctrl-C",
        description="Print events as JSON lines on stdout; status changes go to stderr.",
    )
    listen.add_argument("channel", help="the channel to listen to")
    listen.add_argument(
        "events", nargs="*", default=["*"], metavar="EVENT-GLOB", help="event patterns (default: *)"
    )

    publish = commands.add_parser(
        "publish",
        parents=[common],
        help="publish an event and print how many received it",
        description="Publish EVENT on CHANNEL. DATA is JSON; '-' reads one JSON value per "
        "line from stdin and publishes each.",
    )
    publish.add_argument("channel")
    publish.add_argument("event")
    publish.add_argument("data", nargs="?", default=None, help="JSON payload, or - for stdin")

    channels = commands.add_parser(
        "channels",
        parents=[common],
        help="list active channels and their subscribers",
        description="List channels with subscribers on the broker (within --namespace).",
    )
    channels.add_argument("pattern", nargs="?", default="*", help="a glob (default: *)")

    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="show a durable channel's log, groups and dead letters (or list the logs)",
        description="Show a durable channel's log (length, first and last id), its "
        "consumer groups and their consumers, and its dead letters. Without CHANNEL, "
        "list the durable channels' logs within --namespace.",
    )
    inspect.add_argument("channel", nargs="?", default=None, help="a durable channel")

    dead = commands.add_parser(
        "dead",
        parents=[common],
        help="list, requeue or purge a durable channel's dead letters",
        description="List the newest dead letters of a durable channel (one line each: "
        "id, event, group, deliveries, error). --requeue appends them to the channel's "
        "log again, for the group each died in; --purge deletes them; both act on the "
        "--id given, else on all of them, and print how many.",
    )
    dead.add_argument("channel", help="a durable channel")
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--requeue", action="store_true", help="requeue them")
    action.add_argument("--purge", action="store_true", help="delete them")
    dead.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="ID",
        help="a dead letter's id (repeatable; with --requeue or --purge; default: all)",
    )
    dead.add_argument(
        "--count", type=int, default=100, help="how many to list, the newest (default 100)"
    )

    commands.add_parser(
        "demo",
        help="a short tour of the library on the embedded broker",
        description="A short tour of the library on the embedded broker.",
    )
    return parser


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{where} is not valid JSON: {exc}", EXIT_USAGE) from None


async def _connected(handler: Channels | PubSub, wait: float) -> None:
    """Fail in one line, at once, when the first connection attempt failed.

    (``async with`` returns after that first attempt; a command-line tool should
    say why it cannot work rather than retry in silence.)
    """
    if handler.status is not StatusType.connected and handler.last_error is not None:
        raise CommandError(f"cannot connect to {handler.store.url}: {handler.last_error}")
    with anyio.move_on_after(wait):
        await handler.connect()
        return
    raise CommandError(f"cannot connect to {handler.store.url} within {wait:g}s")


async def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    channels = Channels(args.url, namespace=args.namespace)
    # Set when whoever reads stdout has gone (`tidings listen … | head -1`): there
    # is nobody left to listen for, so the command ends, quietly, as Unix tools do.
    closed = anyio.Event()

    def on_status(channel: Channel, event: str, data: dict[str, Any]) -> None:
        where = f" to {channels.store.url}" if event == "connected" else ""
        detail = f": {data['error']}" if data.get("error") else ""
        print(f"tidings: {event}{where}{detail}", file=err, flush=True)

    _check_names(channels, args.channel, args.events)  # before connecting
    await channels.register(channels.status_channel.name, "*", on_status)

    def on_event(channel: Channel, event: str, data: Any) -> None:
        line = json.dumps({"channel": channel.name, "event": event, "data": data})
        try:
            print(line, file=out, flush=True)
        except BrokenPipeError:
            _silence(out)
            closed.set()

    async with channels:
        await _connected(channels, args.timeout)
        for pattern in args.events:
            await channels.register(args.channel, pattern, on_event)
        await closed.wait()
    return 0


def _check_names(channels: Channels, channel: str, events: Sequence[str]) -> None:
    """Bad names fail before any I/O, naming the bad value.

    Raises:
        ValueError: a bad channel name or event (pattern).
    """
    Namespace(channels.namespace).names(channel)
    for event in events:
        check_name(event, "event")


def _silence(out: TextIO) -> None:
    """Point a closed stdout at /dev/null: what is still buffered, and the flush at
    exit, would raise BrokenPipeError again (and print it)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's StringIO)
        pass


async def _publish(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    if args.data == "-":
        payloads = [
            (_json(line, f"stdin line {n}"), n) for n, line in enumerate(stdin, 1) if line.strip()
        ]
    else:
        payloads = [(None if args.data is None else _json(args.data, "DATA"), 0)]
    channels = Channels(args.url, namespace=args.namespace, publish_timeout=args.timeout)
    _check_names(channels, args.channel, [args.event])  # before connecting
    async with channels as ch:
        await _connected(ch, args.timeout)
        for data, _ in payloads:
            print(await ch.publish(args.channel, args.event, data), file=out, flush=True)
    return 0


async def _channels(args: argparse.Namespace, out: TextIO) -> int:
    store = create_store(args.url)
    namespace = args.namespace if args.namespace is not None else store.namespace
    prefix = f"{namespace}:" if namespace else ""
    async with store.pubsub(publish_timeout=args.timeout) as pubsub:
        await _connected(pubsub, args.timeout)
        names = sorted(await pubsub.channels(prefix + args.pattern))
        counts = await pubsub.count(*names) if names else {}
    width = max([len("CHANNEL"), *(len(n) - len(prefix) for n in names)])
    print(f"{'CHANNEL':<{width}}  SUBSCRIBERS", file=out)
    for name in names:
        print(f"{name[len(prefix) :]:<{width}}  {counts[name]:>11}", file=out)
    return 0


async def _dead(args: argparse.Namespace, out: TextIO) -> int:
    if args.ids is not None and not (args.requeue or args.purge):
        raise CommandError("--id goes with --requeue or --purge", EXIT_USAGE)
    if args.count < 1:
        raise CommandError(f"--count must be at least 1, got {args.count}", EXIT_USAGE)
    for entry_id in args.ids or ():
        parse_id(entry_id, "--id")  # a bad one is a usage error, found before connecting
    # No retention of its own: a requeue appends without trimming the log (the
    # publishers' next publish trims it as they declare).
    channels = Channels(
        args.url,
        namespace=args.namespace,
        durable={args.channel: Retention()},
        publish_timeout=args.timeout,
    )
    async with channels:
        await _connected(channels, args.timeout)
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
    channels = Channels(args.url, namespace=args.namespace, publish_timeout=args.timeout)
    namespace = Namespace(channels.namespace)
    key = None if args.channel is None else namespace.broker_name(args.channel)  # checked now
    async with channels:
        await _connected(channels, args.timeout)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    if args.url is None:
        fallback = "memory://demo" if args.command == "demo" else DEFAULT_URL
        args.url = os.environ.get("TIDINGS_URL") or fallback  # (set but empty: unset)
    if args.timeout is None:
        args.timeout = 5.0
    # Library warnings (a lost connection, …) would repeat what status lines say.
    logging.getLogger("tidings").setLevel(logging.CRITICAL)
    run: Callable[[], Awaitable[int]]
    if args.command == "demo":
        from ._demo import demo

        def run() -> Awaitable[int]:
            return demo(args.url)
    elif args.command == "listen":

        def run() -> Awaitable[int]:
            return _listen(args, sys.stdout, sys.stderr)
    elif args.command == "publish":

        def run() -> Awaitable[int]:
            return _publish(args, sys.stdout, sys.stdin)
    elif args.command == "dead":

        def run() -> Awaitable[int]:
            return _dead(args, sys.stdout)
    elif args.command == "inspect":

        def run() -> Awaitable[int]:
            return _inspect(args, sys.stdout)
    else:

        def run() -> Awaitable[int]:
            return _channels(args, sys.stdout)

    try:
        return anyio.run(run, backend="trio")
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


def _fail(message: str, code: int) -> int:
    print(f"tidings: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
