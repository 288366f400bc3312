"""Stream positions: a log entry id as one int that orders like the ids."""

from __future__ import annotations

import itertools
import random

import pytest

from tidings.policies.streams import parse_id, position, position_id

# hypothesis is not installed in this environment: a table, and a seeded sample.
IDS = [
    "0-0",
    "0-1",
    "1-0",
    "1-1",
    "1-18446744073709551615",  # the largest sequence
    "2-0",
    "1700000000000-0",
    "1700000000000-3",
    "1700000000000-10",
    "1700000000001-0",
]


@pytest.mark.parametrize("entry_id", ["18446744073709551616-0", "99999999999999999999-0"])
def test_milliseconds_past_64_bits_are_no_id(entry_id: str) -> None:
    """Redis ids are two 64-bit numbers: a bigger one is forged, and would be a
    position past every real entry (all later events passed over)."""
    with pytest.raises(ValueError, match="must look like"):
        position(entry_id)
    with pytest.raises(ValueError, match="must look like"):
        parse_id(entry_id)
    assert position("18446744073709551615-0") > position("1700000000000-0")  # the last one


@pytest.mark.parametrize("entry_id", IDS)
def test_position_id_round_trips(entry_id: str) -> None:
    assert position_id(position(entry_id)) == entry_id
    assert position(entry_id.encode()) == position(entry_id)  # bytes as str


def test_positions_order_like_the_ids() -> None:
    for a, b in itertools.combinations(IDS, 2):
        assert (position(a) < position(b)) == (parse_id(a) < parse_id(b)), (a, b)
        assert (position(a) == position(b)) == (parse_id(a) == parse_id(b)), (a, b)


def test_a_random_sample_round_trips_and_orders() -> None:
    rng = random.Random(1234)
    pairs = [(rng.randrange(0, 2**48), rng.randrange(0, 2**64)) for _ in range(500)]
    pairs += [(ms, 0) for ms, _ in pairs[:50]] + [(ms, 2**64 - 1) for ms, _ in pairs[:50]]
    ids = [f"{ms}-{seq}" for ms, seq in pairs]
    for entry_id in ids:
        assert position_id(position(entry_id)) == entry_id
    by_position = sorted(ids, key=position)
    by_tuple = sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert by_position == by_tuple


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("5", "5-0"),  # a bare millisecond time is sequence 0
        (b"5", "5-0"),
        ("007-08", "7-8"),  # leading zeros
        ("00000000000000000000000001-0000000000000000000001", "1-1"),  # long ones too
    ],
)
def test_equivalent_spellings_have_one_position(given: str | bytes, canonical: str) -> None:
    assert position_id(position(given)) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "-",
        "-1",
        "a-1",
        "1-b",
        "1-2-3",
        "1.5-0",
        " 1-0",
        "1-0 ",
        "+1-0",
        "1--1",
        "1-18446744073709551616",  # a sequence past 64 bits
        b"x-1",
        b"\xff-0",
    ],
)
def test_a_malformed_id_raises_value_error_naming_it(bad: str | bytes) -> None:
    with pytest.raises(ValueError, match="entry id") as raised:
        position(bad)
    shown = bad.decode("ascii", "replace") if isinstance(bad, bytes) else bad
    assert repr(shown) in str(raised.value)
    assert "entry id" in str(raised.value)


@pytest.mark.parametrize("bad", ["²-0", "1-²"])
def test_superscript_digits_raise_naming_the_whole_id(bad: str) -> None:
    with pytest.raises(ValueError, match="entry id") as raised:
        position(bad)
    assert repr(bad) in str(raised.value)


@pytest.mark.parametrize("bad", ["\u0661-0", "1-\u0663", "\uff11-0"])
def test_non_ascii_digits_are_not_an_id(bad: str) -> None:
    with pytest.raises(ValueError, match="entry id"):
        position(bad)
