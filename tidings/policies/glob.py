"""Redis glob patterns, translated to regular expressions (sans-IO).

The translation follows Redis's ``stringmatchlen`` to the letter, quirks included,
so that the embedded broker, event patterns and a real Redis agree on every pattern:

- ``*`` matches any run of characters, ``?`` exactly one;
- ``[abc]``, ``[a-z]`` (a reversed range is swapped), ``[^...]`` negates;
  ``\\`` escapes inside a class; a class that is never closed runs to the end of the
  pattern; ``[]`` matches nothing and ``[^]`` any one character;
- ``\\x`` matches ``x`` literally; a trailing lone ``\\`` matches a backslash.

Matches are full matches, case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["compile_glob", "glob_to_regex", "has_magic"]

_MAGIC = frozenset("*?[\\")


def has_magic(pattern: str) -> bool:
    """True when ``pattern`` is more than a literal name."""
    return not _MAGIC.isdisjoint(pattern)


def glob_to_regex(pattern: str) -> str:
    """Translate a Redis glob into an equivalent regular expression (full match)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            i, cls = _char_class(pattern, i + 1)
            out.append(cls)
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """Parse a class starting after its ``[``; return the index of its ``]`` and a regex."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    ranges: list[str] = []
    while i < n:
        c = pattern[i]
        if c == "\\" and n - i >= 2:
            i += 1
            ranges.append(re.escape(pattern[i]))
        elif c == "]":
            break
        elif n - i >= 3 and pattern[i + 1] == "-":
            lo, hi = sorted((c, pattern[i + 2]))
            ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 2
        else:
            ranges.append(re.escape(c))
        i += 1
    if not ranges:
        return i, "." if negate else "(?!)"
    return i, f"[{'^' if negate else ''}{''.join(ranges)}]"


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Return a predicate telling whether a name fully matches ``pattern``."""
    if not has_magic(pattern):
        return pattern.__eq__
    fullmatch = re.compile(glob_to_regex(pattern), re.DOTALL).fullmatch
    return lambda name: fullmatch(name) is not None
