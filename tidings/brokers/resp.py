"""RESP: encoding commands and making sense of replies (sans-IO).

Replies are parsed by `hiredis.Reader` (C, fast); this module holds what
hiredis does not: the command encoder and the names and shapes tidings relies on.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "decode_name",
    "encode_around",
    "encode_command",
    "encode_commands",
    "encode_name",
    "encode_publish",
]


def encode_name(name: str) -> bytes:
    """A channel or pattern name as bytes on the wire (round-trips any bytes)."""
    return name.encode("utf-8", "surrogateescape")


def decode_name(raw: bytes) -> str:
    """The inverse of `encode_name()`."""
    return raw.decode("utf-8", "surrogateescape")


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return encode_name(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a RESP argument must be bytes, str or int, not {type(value).__name__}")
    return str(value).encode()


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings.

    >>> encode_command("PUBLISH", "news", b"hi")
    b'*3\\r\\n$7\\r\\nPUBLISH\\r\\n$4\\r\\nnews\\r\\n$2\\r\\nhi\\r\\n'
    """
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        # (Exact types first, one formatting step per argument: a work queue's XACK
        # names a hundred ids, and this was a sixth of a member's CPU.)
        kind = type(arg)
        if kind is str:
            data = arg.encode("utf-8", "surrogateescape")  # type: ignore[union-attr]
        elif kind is bytes:
            data = arg
        else:
            data = _arg(arg)
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def encode_commands(commands: Iterable[tuple[bytes | str | int, ...]]) -> bytes:
    """Several commands, pipelined in one buffer."""
    return b"".join(encode_command(*command) for command in commands)


def encode_publish(channel: bytes, payload: bytes) -> bytes:
    """``PUBLISH channel payload``, the hot command, in one formatting step.

    >>> encode_publish(b"news", b"hi") == encode_command("PUBLISH", "news", b"hi")
    True
    """
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(payload),
        payload,
    )


def encode_around(
    before: tuple[bytes | str | int, ...], after: tuple[bytes | str | int, ...]
) -> tuple[bytes, bytes]:
    """A command's encoding before and after one argument that changes each time
    (a payload), so that the rest is encoded once and the command is one formatting
    step: ``head + b"$%d\\r\\n%b\\r\\n" % (len(arg), arg) + tail``.

    >>> head, tail = encode_around(("EVALSHA", "abc", 1, "news"), ("", "PUBLISH"))
    >>> whole = encode_command("EVALSHA", "abc", 1, "news", b"hi", "", "PUBLISH")
    >>> head + b"$2\\r\\nhi\\r\\n" + tail == whole
    True
    """
    head = encode_command(*before)
    head = b"*%d" % (len(before) + 1 + len(after)) + head[head.index(b"\r\n") :]
    tail = encode_command(*after) if after else b""
    return head, tail[tail.index(b"\r\n") + 2 :] if after else b""
