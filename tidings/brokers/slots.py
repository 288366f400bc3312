"""Redis Cluster hash slots and topology (sans-IO).

A key (here, a sharded channel name) lives in slot ``CRC16(key) mod 16384``, where
only the part inside the first non-empty ``{...}`` counts when there is one (a
"hash tag"), so ``{user1}.inbox`` and ``{user1}.outbox`` share a slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SLOTS", "Node", "Topology", "crc16", "key_slot"]

SLOTS = 16384


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum Redis Cluster uses.

    >>> hex(crc16(b"123456789"))
    '0x31c3'
    """
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: bytes) -> int:
    """The hash slot of ``key``, hash tags honoured (as ``CLUSTER KEYSLOT``)."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % SLOTS


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """A cluster node's address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Topology:
    """Which master owns which slot, and every node known (masters first)."""

    __slots__ = ("_owners", "nodes")

    def __init__(self, ranges: Iterable[tuple[int, int, Node, Sequence[Node]]]) -> None:
        self._owners: list[Node | None] = [None] * SLOTS
        masters: dict[Node, None] = {}
        replicas: dict[Node, None] = {}
        for start, end, master, slaves in ranges:
            for slot in range(start, end + 1):
                self._owners[slot] = master
            masters[master] = None
            replicas.update(dict.fromkeys(slaves))
        #: Masters, then replicas, each once.
        self.nodes: tuple[Node, ...] = (*masters, *(n for n in replicas if n not in masters))

    @classmethod
    def from_cluster_slots(cls, reply: Any, default_host: str) -> Topology:
        """Build from a ``CLUSTER SLOTS`` reply.

        A node reported with an empty host (Redis does this for the node answering)
        gets ``default_host``, the address we reached it by.
        """

        def node(entry: Sequence[Any]) -> Node:
            host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
            return Node(host or default_host, int(entry[1]))

        return cls(
            (int(item[0]), int(item[1]), node(item[2]), [node(r) for r in item[3:]])
            for item in reply
        )

    @property
    def masters(self) -> tuple[Node, ...]:
        """The nodes that own slots."""
        return tuple(dict.fromkeys(n for n in self._owners if n is not None))

    def owner(self, slot: int) -> Node | None:
        """The master serving ``slot`` (None when no node covers it)."""
        return self._owners[slot]

    def __repr__(self) -> str:
        return f"<Topology masters={len(self.masters)} nodes={len(self.nodes)}>"
