"""Redis glob semantics, quirks included (checked against a real Redis in brokers/)."""

from __future__ import annotations

import pytest

from tidings.policies.glob import compile_glob, glob_to_regex, has_magic

CASES = [
    # pattern, name, matches
    ("*", "", True),
    ("*", "anything:at/all", True),
    ("a*", "a", True),
    ("a*", "ba", False),
    ("a**b", "axxb", True),
    ("*b", "ab\nb", True),  # * crosses newlines, as in Redis
    ("?", "x", True),
    ("?", "", False),
    ("?", "xy", False),
    ("h?llo", "hello", True),
    ("h?llo", "hllo", False),
    ("[ae]x", "ax", True),
    ("[ae]x", "bx", False),
    ("[^ae]x", "bx", True),
    ("[^ae]x", "ax", False),
    ("[a-c]", "b", True),
    ("[a-c]", "d", False),
    ("[c-a]", "b", True),  # a reversed range is swapped
    ("[\\]]", "]", True),
    ("[\\-]", "-", True),
    ("[]", "a", False),  # an empty class matches nothing
    ("[^]", "a", True),  # and negated, any one character
    ("[abc", "b", True),  # an unclosed class runs to the end of the pattern
    ("[abc", "[", False),
    ("[a-]x", "]", True),  # Redis reads "a-]" as a range, then the class runs on
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("\\?", "?", True),
    ("a\\", "a\\", True),  # a trailing lone backslash is literal
    ("orders", "orders", True),
    ("orders", "Orders", False),  # case-sensitive
    ("order", "orders", False),  # full match only
    ("a.b", "axb", False),  # regex metacharacters are literal
    ("(x)+", "(x)+", True),
    ("créé", "créé", True),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), CASES)
def test_glob_matches_like_redis(pattern: str, name: str, matches: bool) -> None:
    assert compile_glob(pattern)(name) is matches


def test_literal_patterns_are_compared_not_compiled() -> None:
    assert not has_magic("orders:created")
    assert has_magic("orders:*")
    assert has_magic("a\\b")
    assert glob_to_regex("a.b") == "a\\.b"
