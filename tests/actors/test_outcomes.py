"""How a callback call ended (`outcome()`), what it counts as (`count()`), and what
the dispatcher does about it (`Dispatcher.account`); `Registration.call` and `Meta`."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest

from tests.helpers import recording_dispatcher
from tidings import CallbackError
from tidings.actors.callbacks import (
    NO_META,
    Dispatcher,
    Interrupted,
    Meta,
    Outcome,
    Registration,
    Undelivered,
    Unfit,
    count,
    named,
    outcome,
)
from tidings.actors.typed import Typed
from tidings.stats import Counters

pytestmark = pytest.mark.anyio

COUNTERS = ("delivered", "dropped", "decode_errors", "callback_errors")


class Custom(CallbackError):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, Outcome.DONE),
        (CallbackError("done"), Outcome.FINISHED),
        (Custom(), Outcome.FINISHED),  # a subclass is the same ending
        (Undelivered(), Outcome.UNDELIVERED),
        (Interrupted(), Outcome.INTERRUPTED),  # an Undelivered, told apart
        (Unfit("no"), Outcome.UNFIT),
        (ValueError("bug"), Outcome.FAILED),
        (RuntimeError(), Outcome.FAILED),
        (KeyError("k"), Outcome.FAILED),
    ],
)
def test_outcome_of_each_ending(exc: BaseException | None, expected: Outcome) -> None:
    assert outcome(exc) is expected


@pytest.mark.parametrize(
    ("result", "counter"),
    [
        (Outcome.DONE, "delivered"),
        (Outcome.FINISHED, "delivered"),
        (Outcome.UNDELIVERED, "dropped"),
        (Outcome.INTERRUPTED, "dropped"),
        (Outcome.UNFIT, "decode_errors"),
        (Outcome.FAILED, "callback_errors"),
    ],
)
def test_count_increments_the_outcomes_counter_only(result: Outcome, counter: str) -> None:
    assert result.counter == counter
    stats = Counters()
    count(stats, result)
    count(stats, result)
    snapshot = stats.snapshot()
    assert getattr(snapshot, counter) == 2
    others = {name: getattr(snapshot, name) for name in COUNTERS if name != counter}
    assert others == dict.fromkeys(others, 0)
    assert snapshot.callbacks_removed == 0  # counting never removes anything


def test_every_outcome_has_a_counter_that_exists() -> None:
    fields = set(Counters.__slots__)
    assert {result.counter for result in Outcome} <= fields


def make() -> tuple[Dispatcher, Counters, list[Registration]]:
    return recording_dispatcher(limit=1)


async def test_account_removes_a_callback_that_finished() -> None:
    dispatcher, stats, removed = make()
    registration = dispatcher.registration("*", print)
    assert dispatcher.account(registration, CallbackError(), "here") is Outcome.FINISHED
    assert removed == [registration]
    assert not registration.active
    assert (stats.delivered, stats.callbacks_removed, stats.callback_errors) == (1, 1, 0)
    dispatcher.account(registration, CallbackError(), "here")  # removed once only
    assert (removed, stats.callbacks_removed) == ([registration], 1)


async def test_account_without_failed_uses_the_failure_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, stats, removed = make()  # failure_limit=1: the second failure removes it
    registration = dispatcher.registration("*", print)
    with caplog.at_level(logging.ERROR, "tidings.test"):
        assert dispatcher.account(registration, ValueError("one"), "here") is Outcome.FAILED
        assert registration.failures is not None
        assert removed == []
        dispatcher.account(registration, ValueError("two"), "here")
    assert removed == [registration]
    assert stats.callback_errors == 2
    assert "failed more than 1 times" in caplog.text


async def test_account_with_failed_calls_it_instead_of_the_failure_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, stats, removed = make()
    registration = dispatcher.registration("*", print)
    told: list[tuple[Registration, Exception, str]] = []
    errors = [ValueError(str(n)) for n in range(5)]
    with caplog.at_level(logging.ERROR, "tidings.test"):
        for error in errors:
            result = dispatcher.account(
                registration, error, "there", failed=lambda *args: told.append(args)
            )
            assert result is Outcome.FAILED
    assert told == [(registration, error, "there") for error in errors]
    assert registration.failures is None  # no budget was even made
    assert registration.active
    assert removed == []
    assert stats.callback_errors == 5  # still counted
    assert caplog.records == []  # logging is failed='s business


@pytest.mark.parametrize(
    ("exc", "counter"),
    [
        (None, "delivered"),
        (Undelivered(), "dropped"),
        (Interrupted(), "dropped"),
        (Unfit("x"), "decode_errors"),
    ],
)
async def test_account_of_other_outcomes_only_counts(exc: Exception | None, counter: str) -> None:
    dispatcher, stats, removed = make()
    registration = dispatcher.registration("*", print)
    told: list[Any] = []
    dispatcher.account(registration, exc, "here", failed=lambda *args: told.append(args))
    assert getattr(stats, counter) == 1
    assert (removed, told, registration.active) == ([], [], True)


def test_call_passes_meta_only_when_the_registration_takes_it() -> None:
    got: list[tuple[Any, ...]] = []
    meta = Meta("1-0", 2)
    plain = Registration("*", lambda *args: got.append(args))
    feed = Registration("*", lambda *args: got.append(args), takes_meta=True)
    plain.call(("ch", "ev", 1), meta)
    feed.call(("ch", "ev", 1), meta)
    assert got == [("ch", "ev", 1), ("ch", "ev", 1, meta)]


def test_call_returns_what_the_callback_returns() -> None:
    assert Registration("*", lambda x: x * 2).call((21,), NO_META) == 42


def test_dispatch_passes_meta_as_call_does() -> None:
    dispatcher, stats, _ = make()
    got: list[tuple[Any, ...]] = []
    meta = Meta("5-1")
    registrations = (
        dispatcher.registration("*", lambda *args: got.append(("plain", *args))),
        dispatcher.registration("*", lambda *args: got.append(("meta", *args)), takes_meta=True),
    )
    assert dispatcher.dispatch(registrations, ("x",), "here", 1, meta) is None
    assert got == [("plain", "x"), ("meta", "x", meta)]
    assert stats.delivered == 2


def test_meta_defaults() -> None:
    assert NO_META == Meta() == (None, None, {})
    assert not Meta().headers
    assert Meta("1-1", 3).id == "1-1"
    assert Meta("1-1", 3).deliveries == 3


class Handler:
    def on_order(self, channel: Any, event: str, data: Any) -> None: ...

    def __call__(self, channel: Any, event: str, data: Any) -> None: ...


def bill(channel: Any, event: str, data: Any) -> None: ...


@pytest.mark.parametrize(
    ("callback", "name"),
    [
        (bill, f"{__name__}.bill"),
        (Handler().on_order, f"{__name__}.Handler.on_order"),
        (Handler(), f"{__name__}.Handler"),
        (functools.partial(bill, None), f"{__name__}.bill"),
        (Typed(bill, int, logging.getLogger("t"), "here"), f"{__name__}.bill"),
    ],
)
def test_log_lines_name_callbacks_by_qualified_name(callback: Any, name: str) -> None:
    assert named(callback) == name


async def test_a_failing_callback_is_named_not_shown_by_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, _, _ = make()
    registration = dispatcher.registration("*", bill)
    with caplog.at_level(logging.ERROR, "tidings.test"):
        dispatcher.account(registration, ValueError("one"), "here")
    assert f"callback {__name__}.bill for '*' failed" in caplog.text
    assert "<function" not in caplog.text
