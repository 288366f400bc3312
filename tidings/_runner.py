"""``tidings run MODULE:FUNCTION``: run an application's async function, drain on a signal.

::

    # myapp/worker.py
    async def main() -> None:
        async with tidings.open_channels(URL, durable=["jobs"]) as channels:
            await channels.register("jobs", "*", handle, group="workers")
            await anyio.sleep_forever()

    $ tidings run myapp.worker:main              # trio; --backend asyncio

The first SIGINT or SIGTERM closes every handler running in the process, as
``close()`` does (a work-queue member hands back what it took and did not start,
finishes the callbacks in hand within ``close_timeout``, and leaves its group), waits
for their callbacks to return, then cancels the function. A handler that is only
cancelled cannot do that: its task tree is torn down, so what it held waits out
``ack_wait``. A second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TextIO

import anyio
import anyio.abc

from ._runtime.lifecycle import Runtime, running

__all__ = ["SpecError", "load", "run_target"]

logger = logging.getLogger("tidings.run")

#: Exit codes: the function returned (or was drained after a signal), it raised, the
#: MODULE:FUNCTION given cannot be run.
EXIT_OK, EXIT_CRASHED, EXIT_USAGE = 0, 1, 2

AppFunction = Callable[[], Coroutine[Any, Any, object]]


class SpecError(Exception):
    """A MODULE:FUNCTION that names nothing runnable (a usage error, in one line)."""


class Crashed(Exception):
    """The application's own code raised (importing it, or running it)."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"{what} raised {type(error).__name__}: {error}")
        self.error = error


def run_target(target: str, backend: str, err: TextIO) -> int:
    """Load ``target`` and run it on ``backend``; return the exit code."""
    try:
        function = load(target)
        return anyio.run(_main, function, target, err, backend=backend)
    except SpecError as exc:
        print(f"tidings: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the signals were watched (importing it)
        return 128 + signal.SIGINT
    except Crashed as exc:
        # The traceback is what the application's author needs; our frames in it
        # (the one that called into their code) are left out.
        tb = exc.error.__traceback__
        traceback.print_exception(type(exc.error), exc.error, _skip_ours(tb), file=err)
        print(f"tidings: {exc}", file=err)
        return EXIT_CRASHED


def _skip_ours(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the application's first frame on (without this module's
    frames, nor importlib's, that led to it)."""
    ours = (os.path.abspath(__file__), os.path.abspath(importlib.__file__ or ""))
    while tb is not None and (
        os.path.abspath(tb.tb_frame.f_code.co_filename) in ours
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    return tb


def load(target: str) -> AppFunction:
    """The async function ``module:function`` names (``function`` may be dotted).

    The current directory is searched first, as ``python -m`` does.

    Raises:
        SpecError: a malformed target, a module that is not there, a missing
            attribute, or not an async function that takes no arguments.
        Crashed: importing the module raised.
    """
    module_name, _, attribute = target.partition(":")
    if not (_dotted(module_name) and _dotted(attribute)):
        raise SpecError(f"{target!r} is not MODULE:FUNCTION (like myapp.worker:main)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = importlib.util.find_spec(module_name)
    except ModuleNotFoundError as exc:  # a parent package is not there
        raise SpecError(f"cannot run {target}: {exc}") from None
    except Exception as exc:  # a parent package's own code raised
        raise Crashed(f"importing {module_name!r}", exc) from None
    if found is None:
        raise SpecError(
            f"cannot run {target}: no module named {module_name!r} "
            "(searched the current directory and sys.path)"
        )
    try:
        found_object: object = importlib.import_module(module_name)
    except Exception as exc:  # its own code, or an import of its own, failed
        raise Crashed(f"importing {module_name!r}", exc) from None
    for part in attribute.split("."):
        try:
            found_object = getattr(found_object, part)
        except AttributeError:
            raise SpecError(
                f"cannot run {target}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    return _checked(target, found_object)


def _dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _checked(target: str, function: object) -> AppFunction:
    if not inspect.iscoroutinefunction(function):
        kind = "a plain function" if inspect.isfunction(function) else type(function).__name__
        raise SpecError(
            f"cannot run {target}: it is {kind}, not an async function; tidings run "
            "calls an 'async def' that takes no arguments"
        )
    try:
        inspect.signature(function).bind()
    except TypeError:
        raise SpecError(
            f"cannot run {target}: it takes arguments; tidings run calls it with none"
        ) from None
    return function


async def _main(function: AppFunction, target: str, err: TextIO) -> int:
    """Run ``function`` beside a signal watcher; the first signal drains, the second
    ends the process."""
    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        app = anyio.CancelScope()
        # Started (listening) before the function runs: no signal falls between.
        await tg.start(_watch_signals, app, err)
        with app:
            try:
                await function()
            except (Exception, SystemExit) as exc:  # raised out here, not in a group
                failure = exc
        tg.cancel_scope.cancel()  # the function is done: so is the watcher
    if isinstance(failure, SystemExit):
        raise failure
    if failure is not None:
        raise Crashed(target, failure)
    return EXIT_OK


async def _watch_signals(
    app: anyio.CancelScope,
    err: TextIO,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    draining = False
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async with anyio.create_task_group() as tg:
            async for signum in signals:
                name = signal.Signals(signum).name
                if draining:
                    _force_exit(name, 128 + signum, err)
                draining = True
                print(f"tidings: {name}: draining (a second signal stops at once)", file=err)
                err.flush()
                tg.start_soon(_drain, app)


async def _drain(app: anyio.CancelScope) -> None:
    """Close every running handler gracefully, wait for their callbacks, then cancel
    the function."""
    runtimes = running()
    logger.info("draining %d handler(s)", len(runtimes))
    async with anyio.create_task_group() as tg:
        for runtime in runtimes:
            tg.start_soon(_close, runtime)
    app.cancel()


async def _close(runtime: Runtime) -> None:
    with anyio.move_on_after(runtime.options.close_timeout):
        await runtime.close()  # hands back, finishes the groups' events in hand, leaves
        # Then the channels' callbacks in hand finish, as a closing handler lets them,
        # before the function's cancellation would cut them short.
        await runtime.all_idle()


def _force_exit(name: str, code: int, err: TextIO) -> None:
    """End the process now: a drain can wait on shielded clean-up (a callback in
    hand, up to close_timeout), which no cancellation cuts short."""
    print(f"tidings: {name} while draining: stopping now", file=err)
    for stream in (sys.stdout, err):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
