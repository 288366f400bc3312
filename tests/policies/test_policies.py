"""Sans-IO policies: intensity, back-off, the status machine, subscription plans."""

from __future__ import annotations

import random

import pytest

from tidings import Backoff
from tidings.policies.intensity import Intensity
from tidings.policies.status import Reconnect, StatusMachine, StatusType
from tidings.policies.subscriptions import Plan, Subscriptions


def test_intensity_counts_within_the_window_only() -> None:
    budget = Intensity(limit=2, window=10.0)
    assert [budget.record(t) for t in (0.0, 1.0, 2.0)] == [False, False, True]
    assert budget.record(12.5) is False  # 0.0, 1.0 and 2.0 have left the window
    assert len(budget) == 1


def test_intensity_zero_means_the_first_event_exceeds() -> None:
    assert Intensity(limit=0, window=1.0).record(0.0) is True


@pytest.mark.parametrize(("limit", "window"), [(-1, 1.0), (1, 0.0), (1, -3.0)])
def test_intensity_rejects_bad_settings(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match=r"limit|window"):
        Intensity(limit, window)


def test_backoff_ceilings_grow_exponentially_to_the_cap() -> None:
    policy = Backoff(initial=0.5, factor=2.0, cap=4.0, jitter=False)
    assert policy.delays(6) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.ceiling(10_000) == 4.0  # no overflow on very long outages


def test_backoff_full_jitter_stays_under_the_ceiling_and_varies() -> None:
    policy = Backoff(initial=1.0, cap=16.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        delays = {policy.delay(attempt, rng) for _ in range(50)}
        assert all(0.0 <= d <= policy.ceiling(attempt) for d in delays)
        assert len(delays) > 40  # jittered, not constant


def test_backoff_default_starts_under_a_second_and_caps_at_16() -> None:
    policy = Backoff()
    assert 0 < policy.ceiling(1) < 1.0
    assert policy.ceiling(100) == 16.0


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"initial": -1}, {"factor": 0.5}, {"initial": 2, "cap": 1}]
)
def test_backoff_rejects_bad_settings_naming_them(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)


def test_status_machine_follows_the_documented_graph() -> None:
    machine = StatusMachine()
    assert machine.status is StatusType.initialised
    data = machine.move(StatusType.connecting, attempt=1)
    assert data == {
        "status": "connecting",
        "previous": "initialised",
        "attempt": 1,
        "retry_in": None,
        "error": None,
    }
    machine.move(StatusType.disconnected, attempt=1, retry_in=0.2, error="refused")
    machine.move(StatusType.connecting, attempt=2)
    assert machine.move(StatusType.connected, attempt=2, down_for=1.5)["down_for"] == 1.5
    machine.move(StatusType.disconnected)
    machine.move(StatusType.closed)
    assert machine.status is StatusType.closed


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), StatusType.connected),
        ((), StatusType.initialised),
        ((StatusType.connecting,), StatusType.connecting),
        ((StatusType.connecting, StatusType.connected), StatusType.connecting),
        ((StatusType.closed,), StatusType.connecting),
        ((StatusType.closed,), StatusType.closed),
    ],
)
def test_status_machine_refuses_illegal_moves(
    path: tuple[StatusType, ...], illegal: StatusType
) -> None:
    machine = StatusMachine()
    for status in path:
        machine.move(status)
    assert not machine.can_move(illegal)
    with pytest.raises(RuntimeError, match="illegal status transition"):
        machine.move(illegal)


S = StatusType
#: The whole graph: every (from, to) pair not listed here must be refused.
LEGAL = {
    (S.initialised, S.connecting),
    (S.initialised, S.closed),
    (S.connecting, S.connected),
    (S.connecting, S.disconnected),
    (S.connecting, S.closed),
    (S.connected, S.disconnected),
    (S.connected, S.closed),
    (S.disconnected, S.connecting),
    (S.disconnected, S.closed),
}
#: A shortest path from initialised to each status.
PATHS = {
    S.initialised: (),
    S.connecting: (S.connecting,),
    S.connected: (S.connecting, S.connected),
    S.disconnected: (S.connecting, S.disconnected),
    S.closed: (S.closed,),
}


@pytest.mark.parametrize("source", list(StatusType))
@pytest.mark.parametrize("target", list(StatusType))
def test_status_table_is_exhaustive(source: StatusType, target: StatusType) -> None:
    """Each of the 25 moves: legal ones happen, illegal ones raise and change nothing."""
    machine = StatusMachine()
    for status in PATHS[source]:
        machine.move(status)
    assert machine.can_move(target) is ((source, target) in LEGAL)
    if (source, target) in LEGAL:
        assert machine.move(target)["previous"] == source.name
        assert machine.status is target
    else:
        with pytest.raises(RuntimeError, match="illegal status transition"):
            machine.move(target)
        assert machine.status is source


NOW = 100.0


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # First attempt fails twice, then connects: attempts count up, delays grow.
        (
            ["connecting", "fail", "connecting", "fail", "connecting", "up"],
            [
                ("connecting", {"attempt": 1}),
                ("disconnected", {"attempt": 1, "retry_in": 1.0, "error": "e"}),
                ("connecting", {"attempt": 2}),
                ("disconnected", {"attempt": 2, "retry_in": 2.0, "error": "e"}),
                ("connecting", {"attempt": 3}),
                ("connected", {"attempt": 3}),
            ],
        ),
        # A lost connection: attempt 0, the shortest delay, then down_for on reconnect.
        (
            ["connecting", "up", "fail", "connecting", "fail", "connecting", "up"],
            [
                ("connecting", {"attempt": 1}),
                ("connected", {"attempt": 1}),
                ("disconnected", {"attempt": 0, "retry_in": 1.0, "error": "e"}),
                ("connecting", {"attempt": 1}),
                ("disconnected", {"attempt": 1, "retry_in": 1.0, "error": "e"}),
                ("connecting", {"attempt": 2}),
                ("connected", {"attempt": 2, "down_for": 4.0}),
            ],
        ),
    ],
)
def test_reconnect_policy_table(events: list[str], expected: list[tuple[str, dict]]) -> None:
    policy = Reconnect(Backoff(initial=1.0, factor=2.0, cap=8.0, jitter=False))
    now = NOW
    reconnections = []
    for event, (status, want) in zip(events, expected, strict=True):
        now += 1.0
        if event == "connecting":
            data = policy.connecting()
        elif event == "up":
            data, again = policy.connected(now)
            reconnections.append(again)
            assert policy.last_error is None
        else:
            data, delay = policy.disconnected("e", now)
            assert delay == data["retry_in"]
            assert policy.last_error == "e"
        assert data["status"] == status
        assert {key: data[key] for key in want} == want
        assert ("down_for" in data) is ("down_for" in want)
    assert reconnections == [False] * (len(reconnections) > 0) + [True] * (len(reconnections) - 1)
    assert policy.closed() is not None
    assert policy.closed() is None  # closing twice is no move
    with pytest.raises(RuntimeError, match="illegal status transition"):
        policy.connecting()


def test_status_values_are_the_seed_api_numbers() -> None:
    assert [(s.name, s.value) for s in StatusType] == [
        ("initialised", 1),
        ("connecting", 2),
        ("connected", 3),
        ("disconnected", 4),
        ("closed", 5),
    ]


def test_subscription_plans_are_the_difference() -> None:
    subs = Subscriptions()
    subs.want(channels=("a", "b"), patterns=("p*",))
    plan = subs.plan()
    assert plan == Plan(subscribe=["a", "b"], psubscribe=["p*"])
    assert not subs.synced(channels=("a",))
    subs.applied(plan)
    assert not subs.plan()
    assert subs.synced(channels=("a", "b"), patterns=("p*",))

    subs.unwant(channels=("a",), patterns=("p*",))
    subs.want(channels=("c",))
    assert subs.plan() == Plan(subscribe=["c"], unsubscribe=["a"], punsubscribe=["p*"])


def test_a_lost_connection_plans_everything_again_in_registration_order() -> None:
    subs = Subscriptions()
    subs.want(channels=("z", "a", "m"))
    subs.applied(subs.plan())
    subs.lost()
    assert subs.plan().subscribe == ["z", "a", "m"]


def test_plans_only_look_at_what_changed() -> None:
    subs = Subscriptions()
    subs.want(channels=tuple(f"c{n}" for n in range(1000)))
    subs.applied(subs.plan())
    subs.want(channels=("new",))
    plan = subs.plan()
    assert plan == Plan(subscribe=["new"])
    subs.applied(plan)
    assert not subs.plan()


def test_a_change_during_a_command_in_flight_is_not_forgotten() -> None:
    subs = Subscriptions()
    subs.want(channels=("c",))
    plan = subs.plan()  # SUBSCRIBE c goes out ...
    subs.unwant(channels=("c",))  # ... the user unregisters meanwhile ...
    subs.applied(plan)  # ... and the confirmation arrives
    assert subs.plan() == Plan(unsubscribe=["c"])


def test_want_then_unwant_before_a_sync_plans_nothing() -> None:
    subs = Subscriptions()
    subs.want(channels=("c",), patterns=("p*",))
    subs.unwant(channels=("c",), patterns=("p*",))
    assert not subs.plan()
    assert subs.synced(channels=("c",), patterns=("p*",))
