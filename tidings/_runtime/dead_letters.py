"""Dead letters: read, requeue and purge what a durable channel's groups buried.

A consumer group's member buries an event that failed its last delivery (or could
never be decoded) in the channel's dead-letter stream, ``<channel>:dead``: one entry
with the fields ``envelope`` (the event as it was stored), ``id`` (its entry in the
log), ``group``, ``consumer``, ``deliveries`` and ``error``. Here they become tools:

- `DeadLetters.show()` shows them as events: the original event and data, the
  dead entry's id, and the headers the event had plus tidings' own saying where and
  why it died (``tidings-original-id``, ``-group``, ``-deliveries``, ``-error``).
- `DeadLetters.requeue()` appends each to the channel's log again, as a new event
  marked ``tidings-requeued-for: <group>`` (the group it died in runs it, the other
  groups and durable subscribers skip it), then removes it from the dead letters:
  in that order, so that a failure in between runs it twice, never loses it.
- `DeadLetters.purge()` removes them.

It talks to the broker through the connection supervisor alone: queries for the
dead-letter stream, the durable publish for a requeue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .._util import cleanup_scope
from ..actors.dispatch import DECODE_ERRORS, envelope_decoder
from ..brokers.base import COMMAND_ERRORS, DeadEntry
from ..policies.headers import DELIVERIES, ERROR, GROUP, ORIGINAL_ID, REQUEUED_FOR, Headers
from ..policies.names import Namespace
from ..policies.streams import DEFAULT_RETENTION, Retention, format_id, parse_id
from ..protocols import Codec
from ..types import Event
from .lifecycle import Runtime

__all__ = ["DeadLetters"]

#: Dead letters read (and requeued, then deleted) per round trip.
BATCH = 100

_LAST_SEQUENCE = 2**64 - 1


class DeadLetters:
    """The dead letters of one handler's durable channels."""

    __slots__ = (
        "_connection",
        "_decode",
        "_encode",
        "_logger",
        "_namespace",
        "_retention",
        "_runtime",
    )

    def __init__(
        self,
        runtime: Runtime,
        protocol: Codec,
        namespace: Namespace,
        retention: Mapping[str, Retention],
    ) -> None:
        self._runtime = runtime
        self._connection = runtime.connection
        self._logger: logging.Logger = runtime.logger
        self._decode = envelope_decoder(protocol)
        self._encode = protocol.encode
        self._namespace = namespace
        #: Retention by broker name, for every durable channel (a requeue trims to it).
        self._retention = retention

    # -- what the facade calls -----------------------------------------------------------

    async def show(self, broker_name: str, count: int) -> list[Event[Any]]:
        """The newest ``count`` dead letters of a durable channel, newest last."""
        self._runtime.check_running("read dead letters")
        entries = await self._read(broker_name, count)
        name = self._namespace.user_name(broker_name)
        return [self._event(name, entry) for entry in reversed(entries)]

    async def requeue(self, broker_name: str, ids: Sequence[str] | None) -> int:
        """Append the chosen dead letters (None: all) to the channel's log again, for
        the group each died in, oldest first; delete those appended. Returns how many."""
        self._runtime.check_running("requeue dead letters")
        name = self._namespace.user_name(broker_name)
        retention = self._retention.get(broker_name, DEFAULT_RETENTION)
        entries = await self._chosen(broker_name, ids)
        requeued = 0
        for start in range(0, len(entries), BATCH):
            appended: list[str] = []
            try:
                for entry_id, fields in entries[start : start + BATCH]:
                    payload = self._requeued(name, entry_id, fields)
                    if payload is not None:
                        await self._connection.publish(broker_name, payload, retention)
                        appended.append(entry_id)
            except BaseException:
                # Those appended leave the dead letters even so, if it can be done
                # at once (else they stay: run twice, never lost).
                if appended:
                    with cleanup_scope():
                        try:
                            await self._delete(broker_name, appended)
                        except COMMAND_ERRORS as exc:
                            self._logger.warning(
                                "%d dead letters of %r requeued and not removed: %s",
                                len(appended),
                                name,
                                exc,
                            )
                raise
            if appended:
                await self._delete(broker_name, appended)
            requeued += len(appended)
        return requeued

    async def purge(self, broker_name: str, ids: Sequence[str] | None) -> int:
        """Delete the chosen dead letters (None: all); return how many there were."""
        self._runtime.check_running("purge dead letters")
        if ids is not None and not ids:
            return 0
        return await self._delete(broker_name, ids)

    # -- reading -------------------------------------------------------------------------

    async def _read(self, broker_name: str, count: int, start: str = "+") -> list[DeadEntry]:
        """Up to ``count`` dead letters from ``start`` down, newest first."""
        entries: list[DeadEntry] = await self._connection.query(
            f"read the dead letters of {broker_name!r}",
            lambda publisher: publisher.read_dead(broker_name, count, start),
        )
        return entries

    async def _chosen(self, broker_name: str, ids: Sequence[str] | None) -> list[DeadEntry]:
        """The dead letters with these ids (None: all of them now), oldest first."""
        if ids is not None:
            found = []
            for entry_id in sorted(set(ids), key=parse_id):
                entry = await self._read(broker_name, 1, entry_id)
                if entry and entry[0][0] == entry_id:  # (else: the one before it, or none)
                    found.append(entry[0])
            return found
        everything: list[DeadEntry] = []
        start: str | None = "+"
        while start is not None:
            page = await self._read(broker_name, BATCH, start)
            everything.extend(page)
            start = _before(page[-1][0]) if len(page) == BATCH else None
        everything.reverse()
        return everything

    def _event(self, name: str, entry: DeadEntry) -> Event[Any]:
        """A dead letter as the event it was, with where and why it died in headers."""
        entry_id, fields = entry
        try:
            event, args, headers = self._decode(None, fields.get("envelope", b""))
        except DECODE_ERRORS:  # buried for that: shown as it is
            event, data, original = "", fields.get("envelope", b""), None
        else:
            data, original = args[2], headers
        return Event(
            channel=name,
            event=event,
            data=data,
            id=entry_id,
            deliveries=None,
            headers=MappingProxyType({**(original or {}), **_tidings_headers(fields, original)}),
        )

    # -- writing -------------------------------------------------------------------------

    def _requeued(self, name: str, entry_id: str, fields: dict[str, bytes]) -> bytes | None:
        """The envelope to append again: the event, its headers (its delivery count
        dropped: it starts over) and the group it is for; None when it cannot be
        decoded (then it stays where it is: it would only be buried again)."""
        try:
            event, args, headers = self._decode(None, fields.get("envelope", b""))
        except DECODE_ERRORS as exc:
            self._logger.warning(
                "dead letter %s of %r is not requeued: its event cannot be decoded (%s)",
                entry_id,
                name,
                exc,
            )
            return None
        group = fields.get("group", b"").decode("utf-8", "replace")
        kept = {k: v for k, v in (headers or {}).items() if k != DELIVERIES}
        kept[ORIGINAL_ID] = kept.get(ORIGINAL_ID) or _text(fields, "id")
        kept[REQUEUED_FOR] = group
        envelope = {"channel": name, "event": event, "data": args[2], "headers": kept}
        encoded: bytes = self._encode(envelope)
        return encoded

    async def _delete(self, broker_name: str, ids: Sequence[str] | None) -> int:
        deleted: int = await self._connection.query(
            f"delete dead letters of {broker_name!r}",
            lambda publisher: publisher.delete_dead(broker_name, ids),
        )
        return deleted


def _text(fields: dict[str, bytes], name: str) -> str:
    return fields.get(name, b"").decode("utf-8", "replace")


def _tidings_headers(fields: dict[str, bytes], original: Headers | None) -> dict[str, str]:
    """What a dead letter's headers say about it: the id of the event's first entry
    (a retried event's own, else the entry that died), its group, how many times it
    was delivered, and why it was buried."""
    first = original.get(ORIGINAL_ID) if original is not None else None
    return {
        ORIGINAL_ID: first or _text(fields, "id"),
        GROUP: _text(fields, "group"),
        DELIVERIES: _text(fields, "deliveries"),
        ERROR: _text(fields, "error"),
    }


def _before(entry_id: str) -> str | None:
    """The greatest id before ``entry_id`` (None: there is none)."""
    ms, seq = parse_id(entry_id)
    if seq:
        return format_id((ms, seq - 1))
    return format_id((ms - 1, _LAST_SEQUENCE)) if ms else None
