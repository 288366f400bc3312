"""Typed payloads (schema=), and typing of user code: checked by mypy --strict."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tidings
from tests.helpers import Harness, eventually
from tidings.options import OptionArgs, Options
from tidings.testing import settle

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    id: int
    total: float = 0.0


@dataclasses.dataclass
class Refund:
    order: int


class Note(typing.TypedDict):
    text: str


async def test_data_is_converted_to_the_schema_before_the_callback(broker: Harness) -> None:
    got: list[Any] = []
    async with tidings.Channels(broker.store(), namespace="typed") as channels:
        await channels.register("c", "order", lambda ch, ev, d: got.append(d), schema=Order)
        await channels.register("c", "refund", lambda ch, ev, d: got.append(d), schema=Refund)
        await channels.register("c", "note", lambda ch, ev, d: got.append(d), schema=Note)
        await channels.publish("c", "order", {"id": 1, "total": 9.5})
        await channels.publish("c", "refund", {"order": 1})
        await channels.publish("c", "note", {"text": "hi"})
        await settle(channels)
    assert got == [Order(1, 9.5), Refund(1), {"text": "hi"}]


async def test_data_that_does_not_fit_is_counted_and_never_reaches_the_callback(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    typed: list[Any] = []
    plain: list[Any] = []
    async with tidings.Channels(broker.store(), namespace="typed") as channels:
        await channels.register("c", "*", lambda ch, ev, d: typed.append(d), schema=Order)
        await channels.register("c", "*", lambda ch, ev, d: plain.append(d))
        with caplog.at_level(logging.WARNING, "tidings"):
            for data in ({"id": "one"}, {"total": 1.0}, [1], None, {"id": 2}):
                await channels.publish("c", "e", data)
            await settle(channels)
        stats = channels.stats()
    assert typed == [Order(2)]
    assert len(plain) == 5  # the other callback is not affected
    assert stats.decode_errors == 4
    assert stats.callback_errors == 0
    # Logged once per burst: the first, then a count in the next warning.
    unfit = [r for r in caplog.records if "does not fit schema Order" in r.getMessage()]
    assert len(unfit) == 1
    assert "Expected `int`, got `str`" in unfit[0].getMessage()


async def test_iterators_yield_typed_events(broker: Harness) -> None:
    async with tidings.Channels(broker.store(), namespace="typed") as channels:
        async with channels.subscribe("c", schema=Order) as events:
            await channels.publish("c", "e", {"id": "bad"})
            await channels.publish("c", "e", {"id": 3})
            event = await events.receive()
        assert event.data == Order(3)
        assert channels.stats().decode_errors == 1


async def test_a_typed_callback_is_found_deduplicated_and_unregistered_as_itself(
    broker: Harness,
) -> None:
    got: list[Any] = []

    def callback(channel: tidings.Channel, event: str, data: Order) -> None:
        got.append(data)

    async with tidings.Channels(broker.store(), namespace="typed") as channels:
        await channels.register("c", "*", callback, schema=Order)
        await channels.register("c", "*", callback, schema=Order)  # a no-op
        await channels.publish("c", "e", {"id": 1})
        await settle(channels)
        assert got == [Order(1)]
        assert await channels.unregister("c", "*", callback) is not None
        assert "c" not in channels


async def test_a_schema_msgspec_cannot_convert_to_fails_before_any_io(broker: Harness) -> None:
    async with tidings.Channels(broker.store(), namespace="typed") as channels:
        with pytest.raises(TypeError, match="schema="):
            await channels.register("c", "*", print, schema=object())
        with pytest.raises(TypeError, match="schema="):
            channels.subscribe("c", schema=42)  # type: ignore[call-overload]
        assert "c" not in channels


async def test_a_group_member_dead_letters_data_that_does_not_fit(broker: Harness) -> None:
    got: list[Any] = []
    options: dict[str, Any] = {"namespace": "typedg", "durable": ["jobs"]}
    async with tidings.Channels(broker.store(), **options) as member:
        log: list[str] = []
        await member.register("server", "dead_letter", lambda ch, ev, d: log.append(d["error"]))
        await member.register("jobs", "*", lambda c, e, d: got.append(d), group="g", schema=Order)
        await member.publish("jobs", "e", {"id": "x"})
        await member.publish("jobs", "e", {"id": 5})
        await eventually(lambda: got == [Order(5)] and len(log) == 1)
        assert "does not fit the schema" in log[0]


def test_the_option_keywords_are_typed_in_step_with_the_options() -> None:
    hints = typing.get_type_hints(OptionArgs)
    assert set(hints) == {f.name for f in dataclasses.fields(Options)}


USER_CODE = """
import anyio
import msgspec
import pydantic
import tidings


class Order(msgspec.Struct):
    id: int


class Invoice(pydantic.BaseModel):
    number: int


def on_connected(channel: tidings.Channel, event: str, data: tidings.ConnectedData) -> None:
    print(data["attempt"], data.get("down_for"))


def on_gap(channel: tidings.Channel, event: str, data: tidings.GapData) -> None:
    reveal_type(data["reason"])
    print(data["last_id"], data.get("lost"))


def on_dead(channel: tidings.Channel, event: str, data: tidings.DeadLetterData) -> None:
    print(data["dead_id"], data["deliveries"] + 1)


def on_slow(channel: tidings.Channel, event: str, data: tidings.SlowConsumerData) -> None:
    print(data["dropped"] + data["max_pending"])


def on_down(channel: tidings.Channel, event: str, data: tidings.DisconnectedData) -> None:
    print(data["error"], data["retry_in"])


def on_order(channel: tidings.Channel, event: str, data: Order) -> None:
    print(data.id + 1)


async def main() -> None:
    async with tidings.open_channels("memory://", publish_timeout=2.0) as channels:
        reveal_type(channels)
        await channels.register("orders", "*", on_order, schema=Order)
        async with channels.subscribe("orders", schema=Order) as events:
            async for event in events:
                reveal_type(event)
                total: int = event.data.id
        async with channels.subscribe("orders") as untyped:
            async for any_event in untyped:
                reveal_type(any_event.data)
        async with channels.subscribe("invoices", schema=Invoice) as invoices:
            async for invoice in invoices:
                reveal_type(invoice)
                number: int = invoice.data.number
        await channels.publish("invoices", "paid", Invoice(number=1))
        status = channels.status_channel.name
        await channels.register(status, "connected", on_connected)
        await channels.register(status, "disconnected", on_down)
        await channels.register(status, "gap", on_gap)
        await channels.register(status, "dead_letter", on_dead)
        await channels.register(status, "slow_consumer", on_slow)
        async with channels.subscribe(status, "connected", schema=tidings.ConnectedData) as ups:
            async for up in ups:
                reveal_type(up.data)
        reveal_type(channels.stats())
        reveal_type(channels.status_channel)
        reveal_type(channels.status)
        reveal_type(channels.store)
        reveal_type(tidings.Options())
    print(str(channels.status))
"""

WRONG_CODE = """
import msgspec
import tidings


class Order(msgspec.Struct):
    id: int


class Refund(msgspec.Struct):
    order: int


def on_refund(channel: tidings.Channel, event: str, data: Refund) -> None: ...


async def main() -> None:
    async with tidings.open_channels("memory://", publish_timout=2.0) as channels:
        pass
    tidings.Channels("memory://", max_pending="10")
    async with tidings.open_channels("memory://") as channels:
        await channels.register("orders", "*", on_refund, schema=Order)
        async with channels.subscribe("orders", schema=Order) as events:
            async for event in events:
                name: str = event.data.id
"""


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "user.py").write_text(textwrap.dedent(code))
    # The package as users get it (an editable install hides it from mypy).
    env = {**os.environ, "MYPYPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_user_code_is_typed(tmp_path: Path) -> None:
    """mypy --strict on code using tidings: the handler, typed events and options."""
    result = _mypy(tmp_path, USER_CODE)
    out = result.stdout
    assert 'Revealed type is "tidings.channels.Channels"' in out, out
    assert 'Revealed type is "tidings.types.Event[user.Order]"' in out, out
    assert 'Revealed type is "tidings.types.Event[user.Invoice]"' in out, out
    assert 'Revealed type is "Any"' in out, out
    assert "Literal['trimmed'] | Literal['deleted'] | Literal['rewound']" in out, out
    assert "TypedDict(tidings.types.ConnectedData, {'status': str" in out, out
    assert 'Revealed type is "tidings.stats.Stats"' in out, out
    assert result.returncode == 0, out
    assert ": error:" not in out, out
    # Everything users are handed is named by a public path, never a private module.
    revealed = [line for line in out.splitlines() if "Revealed type" in line]
    assert len(revealed) == 11, out
    assert not re.search(r"tidings(\.\w+)*\._", out), out


def test_user_code_mistakes_are_type_errors(tmp_path: Path) -> None:
    out = _mypy(tmp_path, WRONG_CODE).stdout
    assert '"publish_timout"' in out, out  # a misspelt option
    assert '"max_pending"' in out, out  # an option of the wrong type
    assert 'Argument 3 to "register" of "Channels"' in out, out  # a callback of another type
    assert 'Incompatible types in assignment (expression has type "int"' in out, out
