"""pydantic models as ``schema=`` and as published data (pydantic is an extra, never
imported by tidings itself)."""

from __future__ import annotations

import datetime
import logging
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest

import tidings
from tests.helpers import Harness, eventually
from tidings.testing import settle

pydantic = pytest.importorskip("pydantic")

pytestmark = pytest.mark.anyio


class Order(pydantic.BaseModel):
    id: int
    at: datetime.datetime
    lines: list[str] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("id")
    @classmethod
    def positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("an order id is positive")
        return value


@pydantic.dataclasses.dataclass
class Refund:
    order: int

    @pydantic.field_validator("order")
    @classmethod
    def positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("a refund names an order")
        return value


class Plain:
    """Neither msgspec nor pydantic can build it from decoded data."""


AT = datetime.datetime(2026, 12, 7, 12, 30, tzinfo=datetime.UTC)


async def test_a_model_schema_validates_the_data_before_the_callback(broker: Harness) -> None:
    got: list[Any] = []
    async with tidings.Channels(broker.store(), namespace="pyd") as channels:
        await channels.register("c", "order", lambda ch, ev, d: got.append(d), schema=Order)
        await channels.register("c", "refund", lambda ch, ev, d: got.append(d), schema=Refund)
        await channels.register("c", "many", lambda ch, ev, d: got.append(d), schema=list[Order])
        # pydantic's lax mode: a JSON string becomes the datetime the model declares.
        await channels.publish("c", "order", {"id": 1, "at": "2026-12-07T12:30:00Z"})
        await channels.publish("c", "refund", {"order": 1})
        await channels.publish("c", "many", [{"id": 2, "at": "2026-12-07T12:30:00Z"}])
        await settle(channels)
    assert got == [Order(id=1, at=AT), Refund(1), [Order(id=2, at=AT)]]


async def test_data_a_model_refuses_is_counted_logged_in_one_line_and_never_delivered(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    typed: list[Any] = []
    refunds: list[Any] = []
    plain: list[Any] = []
    async with tidings.Channels(broker.store(), namespace="pyd") as channels:
        await channels.register("c", "*", lambda ch, ev, d: typed.append(d), schema=Order)
        await channels.register("c", "*", lambda ch, ev, d: plain.append(d))
        # A pydantic dataclass's validators run (msgspec could build it, unvalidated).
        await channels.register("r", "*", lambda ch, ev, d: refunds.append(d), schema=Refund)
        with caplog.at_level(logging.WARNING, "tidings"):
            for data in ({"id": "one", "at": "not a date"}, {"id": -1, "at": "x"}, None):
                await channels.publish("c", "e", data)
            await channels.publish("c", "e", {"id": 7, "at": "2026-12-07T12:30:00Z"})
            await channels.publish("r", "e", {"order": 0})
            await settle(channels)
        stats = channels.stats()
    assert typed == [Order(id=7, at=AT)]
    assert len(plain) == 4  # the other callback is not affected
    assert refunds == []
    assert stats.decode_errors == 4
    assert stats.callback_errors == 0
    unfit = [r.getMessage() for r in caplog.records if "does not fit schema" in r.getMessage()]
    assert len(unfit) == 2, unfit  # once per burst per registration
    first = next(line for line in unfit if "schema Order" in line)
    assert "valid integer" in first
    assert "at id" in first
    assert "(and 1 more)" in first
    assert "\n" not in first
    assert "a refund names an order" in next(line for line in unfit if "schema Refund" in line)


async def test_iterators_yield_validated_models(broker: Harness) -> None:
    async with tidings.Channels(broker.store(), namespace="pyd") as channels:
        async with channels.subscribe("c", schema=Order) as events:
            await channels.publish("c", "e", {"id": 0, "at": "2026-12-07T12:30:00Z"})
            await channels.publish("c", "e", Order(id=3, at=AT, lines=["tea"]))
            event = await events.receive()
        assert event.data == Order(id=3, at=AT, lines=["tea"])
        assert channels.stats().decode_errors == 1


async def test_a_published_model_travels_as_its_json_mode_dump(broker: Harness) -> None:
    got: list[Any] = []
    async with tidings.Channels(broker.store(), namespace="pyd") as channels:
        await channels.register("c", "*", lambda ch, ev, d: got.append(d))
        order = Order(id=4, at=AT)
        await channels.publish("c", "one", order)
        await channels.publish("c", "nested", {"orders": [order], "n": 1})
        await settle(channels)
    dump = {"id": 4, "at": "2026-12-07T12:30:00Z", "lines": []}
    assert got == [dump, {"orders": [dump], "n": 1}]


async def test_a_model_goes_through_a_work_queue_and_its_dead_letters(broker: Harness) -> None:
    got: list[Order] = []
    dead: list[str] = []
    # A namespace of its own: the key outlives the test on a shared server.
    options: dict[str, Any] = {"namespace": f"pydg-{uuid.uuid4().hex}", "durable": ["jobs"]}
    async with tidings.Channels(broker.store(), **options) as member:
        await member.register("server", "dead_letter", lambda ch, ev, d: dead.append(d["error"]))
        await member.register("jobs", "*", lambda c, e, d: got.append(d), group="g", schema=Order)
        await member.publish("jobs", "e", {"id": -5, "at": "2026-12-07T12:30:00Z"})
        await member.publish("jobs", "e", Order(id=5, at=AT), key="order-5")
        assert await member.publish("jobs", "e", Order(id=5, at=AT), key="order-5") == 0
        await eventually(lambda: got == [Order(id=5, at=AT)] and len(dead) == 1)
        assert "does not fit the schema" in dead[0]
        letters = await member.dead_letters("jobs")
        assert [letter.data["id"] for letter in letters] == [-5]


@pytest.mark.parametrize("schema", [Plain, list[Plain], dict[str, Plain]])
async def test_a_type_neither_can_build_is_a_type_error_at_register(schema: Any) -> None:
    # An address nothing listens on: an attempt at I/O would fail otherwise.
    channels = tidings.Channels("redis://127.0.0.1:9/0", namespace="pyd")
    with pytest.raises(TypeError) as raised:
        await channels.register("c", "*", print, schema=schema)
    message = str(raised.value)
    assert f"schema={schema!r}" in message
    assert "pydantic" in message
    assert "\n" not in message
    with pytest.raises(TypeError, match="Plain"):
        channels.subscribe("c", schema=schema)
    assert "c" not in channels


async def test_anything_else_json_cannot_hold_is_still_refused_before_any_io() -> None:
    channels = tidings.Channels("redis://127.0.0.1:9/0", namespace="pyd")
    with pytest.raises(TypeError, match="Object of type Plain is not JSON serializable"):
        await channels.publish("c", "e", {"x": Plain()})
    with pytest.raises(TypeError, match="set"):
        await channels.publish("c", "e", [Order(id=1, at=AT), {1}])


def test_tidings_never_imports_pydantic_and_works_without_it() -> None:
    """Typed payloads and JSON work, and refuse what they cannot build, with pydantic
    absent (made unimportable here)."""
    program = textwrap.dedent(
        """
        import sys
        sys.modules["pydantic"] = None  # import pydantic: ImportError
        import anyio, msgspec, tidings
        from tidings.testing import settle

        class Order(msgspec.Struct):
            id: int

        class Plain:
            pass

        async def main():
            got = []
            async with tidings.open_channels() as channels:
                await channels.register("c", "*", lambda c, e, d: got.append(d), schema=Order)
                await channels.publish("c", "e", {"id": 1})
                await settle(channels)
                try:
                    await channels.register("c", "*", print, schema=Plain)
                except TypeError as exc:
                    print("refused:", exc)
            print(got)

        anyio.run(main)
        assert sys.modules["pydantic"] is None
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "[Order(id=1)]" in result.stdout
    assert "refused: schema=<class '__main__.Plain'> is not a type msgspec converts to" in (
        result.stdout
    )
    assert "pydantic model" in result.stdout  # says what would work
