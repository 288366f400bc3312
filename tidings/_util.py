"""Small helpers shared across the package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["CLEANUP_TIMEOUT", "cleanup_scope", "collapse_exception_group"]

#: The bound, in seconds, on shielded cleanup that must await: an UNSUBSCRIBE,
#: closing a socket, a last checkpoint. Long enough for a round trip to a live
#: server, short enough that a dead one cannot hold a close.
CLEANUP_TIMEOUT = 1.0


def cleanup_scope() -> anyio.CancelScope:
    """A shielded scope for cleanup, given up after `CLEANUP_TIMEOUT` seconds.

    Use it as ``with cleanup_scope(): await connection.aclose()``: the cleanup runs
    even in a cancelled task, and never for long.
    """
    return anyio.move_on_after(CLEANUP_TIMEOUT, shield=True)


@contextmanager
def collapse_exception_group() -> Iterator[None]:
    """Re-raise a group holding exactly one exception as that exception.

    tidings runs its tasks in task groups, which wrap every error in an
    `ExceptionGroup`, even a lone one. Its public boundaries (``run`` and
    ``async with``) raise the single underlying exception instead, so that
    ``except PublishError:`` works; a group of several genuine errors is left alone.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            raise
        # Keep the leaf's own context: raising it here would chain it to the group.
        context = leaf.__context__
        try:
            raise leaf
        finally:
            leaf.__context__ = context
            del leaf, group
