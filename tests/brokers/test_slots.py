from __future__ import annotations

import pytest

from tidings.brokers.slots import Node, Topology, crc16, key_slot


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # values from CLUSTER KEYSLOT on a real server
        (b"foo", 12182),
        (b"bar", 5061),
        (b"shop:orders", 14563),
        (b"{user1}.inbox", 8106),
        (b"{user1}.outbox", 8106),  # a hash tag keeps keys together
        (b"user1", 8106),
        (b"{}user1", 6971),  # an empty tag does not count: the whole key is hashed
        (b"foo{}{bar}", 8363),
        (b"foo{{bar}}zap", 4015),
        (b"", 0),
    ],
)
def test_key_slot_matches_cluster_keyslot(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


def test_crc16_check_value() -> None:
    assert crc16(b"123456789") == 0x31C3


def test_topology_from_cluster_slots() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
        [5461, 10922, [b"", 7001, b"id1"], [b"127.0.0.1", 7004, b"id4"]],
        [10923, 16383, [b"127.0.0.1", 7002, b"id2"]],
    ]
    topology = Topology.from_cluster_slots(reply, default_host="10.0.0.9")
    assert topology.owner(0) == Node("127.0.0.1", 7000)
    assert topology.owner(5461) == Node("10.0.0.9", 7001)  # empty host: the one we asked
    assert topology.owner(16383) == Node("127.0.0.1", 7002)
    assert topology.masters == (
        Node("127.0.0.1", 7000),
        Node("10.0.0.9", 7001),
        Node("127.0.0.1", 7002),
    )
    assert topology.nodes[3:] == (Node("127.0.0.1", 7003), Node("127.0.0.1", 7004))
    assert str(topology.nodes[0]) == "127.0.0.1:7000"


def test_uncovered_slots_have_no_owner() -> None:
    topology = Topology([(0, 99, Node("h", 1), [])])
    assert topology.owner(100) is None
