"""Small helpers shared across the package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collapse_exception_group", "quote_userinfo", "redact", "split_userinfo"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/{0,2}")
#: ``host``, ``host:port``, ``[v6]:port``, or a comma-separated list of them.
_HOSTS = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[^:,\[\]/?#@]+)(?::\d*)?(?:,(?:\[[0-9A-Fa-f:.]+\]|[^:,\[\]/?#@]+)(?::\d*)?)*"
)


def split_userinfo(url: str) -> tuple[str, str | None, str | None, str]:
    """``scheme://``, user, password and the rest of a URL.

    Random passwords often hold ``/``, ``?``, ``#`` or ``@`` unescaped. The standard
    reading ends the user information at the first ``/?#`` and the last ``@``
    before it; where that leaves a host part that is no host (``u:p/w@host`` reads
    as host ``u``, port ``p``), the user information runs to the *last* ``@``
    instead, keeping the whole password in it rather than spilling it into the
    host, path or query, where it would be printed. An ``@`` after a valid host
    (``?client_name=me@box``) keeps the standard reading.

    >>> split_userinfo("redis://u:p/ss@w#rd@host:6379/0")
    ('redis://', 'u', 'p/ss@w#rd', 'host:6379/0')
    >>> split_userinfo("redis://host:6379/0?client_name=me@box")
    ('redis://', None, None, 'host:6379/0?client_name=me@box')
    """
    match = _SCHEME.match(url)
    if match is None:
        return "", None, None, url
    head, rest = match.group(), url[match.end() :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    tail = rest[len(authority) :]
    userinfo, at, hosts = authority.rpartition("@")
    if "@" in tail and not _plausible(head, hosts, re.split(r"[?#]", tail, maxsplit=1)[0]):
        userinfo, at, _ = rest.rpartition("@")  # a password holding "/", "?" or "#"
    if not at:
        return head, None, None, rest
    user, colon, password = userinfo.partition(":")
    return head, user, password if colon else None, rest[len(userinfo) + 1 :]


def _plausible(head: str, hosts: str, path: str) -> bool:
    """Whether a standard reading makes sense: real hosts, and a path the scheme takes."""
    if head.startswith("unix:"):
        return not hosts  # a socket path, and no host
    if hosts and not _HOSTS.fullmatch(hosts):
        return False
    return re.fullmatch(r"/?\d*/?", path) is not None


def quote_userinfo(url: str) -> str:
    """The URL with ``/ ? # @`` in its user and password percent-encoded (parseable).

    >>> quote_userinfo("redis://:p/w@host")
    'redis://:p%2Fw@host'
    """
    head, user, password, rest = split_userinfo(url)
    if user is None:
        return url
    userinfo = _quote(user) + (f":{_quote(password)}" if password is not None else "")
    return f"{head}{userinfo}@{rest}"


def _quote(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in "/?#@" else c for c in text)


def redact(url: str) -> str:
    """Hide the password of a URL (works on malformed URLs too; see split_userinfo).

    >>> redact("redis://user:secret@host:6379/0")
    'redis://user:****@host:6379/0'
    >>> redact("redis://:a@b/c?d#e@host/0")
    'redis://:****@host/0'
    """
    head, user, password, rest = split_userinfo(url)
    if password is None:
        return url
    return f"{head}{_quote(user or '')}:****@{rest}"


@contextmanager
def collapse_exception_group() -> Iterator[None]:
    """Re-raise a group holding exactly one exception as that exception.

    tidings runs its tasks in task groups, which wrap every error in an
    :class:`ExceptionGroup`, even a lone one. Its public boundaries (``run`` and
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
