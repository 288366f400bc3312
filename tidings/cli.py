"""The ``tidings`` command: look at live channels, publish, and the demo.

::

    tidings listen orders 'created' 'up*'       # JSON lines on stdout until Ctrl-C
    tidings publish orders created '{"id": 1}'  # prints how many received it
    echo '{"id": 2}' | tidings publish orders created -
    tidings channels 'ord*'                     # active channels and subscribers
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
from .channels import Channel, Channels
from .errors import TidingsError
from .policies.names import Namespace, check_name
from .policies.status import StatusType
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
