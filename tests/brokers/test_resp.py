from __future__ import annotations

import hiredis
import pytest

from tidings.brokers.resp import decode_name, encode_command, encode_commands, encode_name


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        (("PING",), b"*1\r\n$4\r\nPING\r\n"),
        (("PUBLISH", "news", b"hi"), b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$2\r\nhi\r\n"),
        (("SELECT", 15), b"*2\r\n$6\r\nSELECT\r\n$2\r\n15\r\n"),
        (("SET", "k", b""), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"),
        (("PUBLISH", "é", b"\r\n"), b"*3\r\n$7\r\nPUBLISH\r\n$2\r\n\xc3\xa9\r\n$2\r\n\r\n\r\n"),
    ],
)
def test_commands_are_arrays_of_bulk_strings(
    args: tuple[bytes | str | int, ...], wire: bytes
) -> None:
    assert encode_command(*args) == wire


def test_encoded_commands_parse_back_with_hiredis() -> None:
    reader = hiredis.Reader()
    payload = bytes(range(256))
    reader.feed(encode_commands([("PUBLISH", "c", payload), ("PING",)]))
    assert reader.gets() == [b"PUBLISH", b"c", payload]
    assert reader.gets() == [b"PING"]
    assert reader.gets() is False


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="name"):
        encode_command()
    with pytest.raises(TypeError, match="float"):
        encode_command("SET", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        encode_command("SET", True)


def test_names_round_trip_any_bytes() -> None:
    for raw in (b"plain", "ünï".encode(), b"\xff\xfe not utf-8"):
        assert encode_name(decode_name(raw)) == raw
