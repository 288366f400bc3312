"""Dead letters are a tool, not a grave: `dead_letters()`, `requeue_dead()` and
`purge_dead()`, on memory://, on a real Redis and on a Redis Cluster."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests.helpers import FAST, Harness, MemoryHarness, RedisHarness, eventually
from tests.redis_cluster import RedisCluster
from tidings import Channel, Channels, Event, Retention
from tidings._runtime.lifecycle import runtime_of
from tidings.brokers.base import Publisher

pytestmark = pytest.mark.anyio

NS = "d"


@pytest.fixture(autouse=True)
def _fresh_namespace() -> None:
    """Streams outlive a test on the shared redis-server."""
    global NS
    NS = f"d{uuid.uuid4().hex[:8]}"


def handler(broker: Harness, **options: Any) -> Channels:
    options.setdefault("durable", {"jobs": Retention(max_len=100_000)})
    options.setdefault("backoff", FAST)
    options.setdefault("max_deliver", 2)
    options.setdefault("ack_wait", 0.5)
    options.setdefault("retry_backoff", None)
    return Channels(broker.store(), namespace=NS, **options)


class Flaky:
    """A group's callback that fails until it is fixed."""

    def __init__(self) -> None:
        self.failing = True
        self.tries = 0
        self.done: list[Any] = []

    def __call__(self, channel: Channel, event: str, data: Any) -> None:
        self.tries += 1
        if self.failing:
            raise RuntimeError(f"cannot do {data!r}")
        self.done.append(data)


async def dead(channels: Channels, count: int, channel: str = "jobs") -> list[Event[Any]]:
    """Wait until ``channel`` has ``count`` dead letters; return them."""
    with anyio.fail_after(15):
        while len(letters := await channels.dead_letters(channel)) < count:
            await anyio.sleep(0.02)
    assert len(letters) == count
    return letters


def envelope(data: Any, event: str = "job", **headers: str) -> bytes:
    message: dict[str, Any] = {"channel": "jobs", "event": event, "data": data}
    if headers:
        message["headers"] = headers
    return json.dumps(message).encode()


def bury(broker: Harness, payload: bytes, entry_id: str = "1-0", group: str = "workers") -> str:
    """Write a dead letter as a group member would; return its id."""
    fields = [
        ("envelope", payload),
        ("id", entry_id.encode()),
        ("group", group.encode()),
        ("consumer", b"host-1-abc"),
        ("deliveries", b"2"),
        ("error", b"RuntimeError: boom"),
    ]
    key = f"{NS}:jobs"
    if isinstance(broker, MemoryHarness):
        return broker.hub.add_dead(key, fields, Retention())
    assert isinstance(broker, RedisHarness)
    return str(broker.client.xadd(f"{key}:dead", dict(fields)))


def entries(broker: Harness, channel: str = "jobs") -> list[tuple[str, dict[str, Any]]]:
    """The ids and envelopes in a channel's log, oldest first."""
    key = f"{NS}:{channel}"
    if isinstance(broker, MemoryHarness):
        found = broker.hub.read(key, "0-0", 100_000)
    else:
        assert isinstance(broker, RedisHarness)
        client = broker.server.client()
        found = [(i.decode(), fields[b"envelope"]) for i, fields in client.xrange(key)]
    return [(entry_id, json.loads(payload)) for entry_id, payload in found]


def log(broker: Harness, channel: str = "jobs") -> list[dict[str, Any]]:
    """The envelopes in a channel's log, oldest first."""
    return [envelope for _, envelope in entries(broker, channel)]


def pending(broker: Harness, group: str, channel: str = "jobs") -> int:
    key = f"{NS}:{channel}"
    if isinstance(broker, MemoryHarness):
        return len(broker.hub.pending(key, group))
    assert isinstance(broker, RedisHarness)
    return int(broker.server.client().xpending(key, group)["pending"])


async def test_a_dead_letter_shows_the_event_and_why_it_died(broker: Harness) -> None:
    flaky = Flaky()
    async with handler(broker) as member, handler(broker) as producer:
        await member.register("jobs", "*", flaky, group="workers")
        await producer.publish("jobs", "charge", {"order": 42}, headers={"tenant": "acme"})
        [letter] = await dead(producer, 1)
        assert flaky.tries == 2
        [(entry_id, entry)] = entries(broker)
        assert entry["data"] == {"order": 42}
    assert letter.channel == "jobs"
    assert letter.event == "charge"
    assert letter.data == {"order": 42}
    assert letter.deliveries is None
    assert letter.id is not None
    assert dict(letter.headers) == {
        "tenant": "acme",
        "tidings-original-id": entry_id,  # its entry in the log
        "tidings-group": "workers",
        "tidings-deliveries": "2",
        "tidings-error": "RuntimeError: cannot do {'order': 42}",
    }
    with pytest.raises(TypeError):
        letter.headers["tenant"] = "other"  # type: ignore[index]


async def test_requeue_runs_it_again_in_its_group_and_removes_it(broker: Harness) -> None:
    flaky = Flaky()
    async with handler(broker) as member, handler(broker) as producer:
        await member.register("jobs", "*", flaky, group="workers")
        await producer.publish("jobs", "charge", 7, headers={"tenant": "acme"})
        [letter] = await dead(producer, 1)
        flaky.failing = False  # the bug is fixed
        assert await producer.requeue_dead("jobs") == 1
        await eventually(lambda: flaky.done == [7], limit=10)
        assert await producer.dead_letters("jobs") == []
        await eventually(lambda: pending(broker, "workers") == 0)
        assert await producer.requeue_dead("jobs") == 0  # nothing left
    first, again = log(broker)
    assert again["event"] == "charge"
    assert again["data"] == 7
    assert again["headers"] == {
        "tenant": "acme",
        "tidings-requeued-for": "workers",
        "tidings-original-id": letter.headers["tidings-original-id"],
    }
    assert "headers" not in first or "tidings-requeued-for" not in first["headers"]


async def test_a_requeued_event_is_for_the_group_it_died_in(broker: Harness) -> None:
    """Members of its group run it; other groups acknowledge it unrun; durable
    subscribers outside groups skip it."""
    flaky = Flaky()
    audited: list[Any] = []
    plain: list[Any] = []
    async with handler(broker) as member, handler(broker) as others, handler(broker) as producer:
        await member.register("jobs", "*", flaky, group="workers")
        await others.register("jobs", "*", lambda c, e, d: audited.append(d), group="audit")
        await others.register("jobs", "*", lambda c, e, d: plain.append(d))
        await producer.publish("jobs", "job", "once")
        await dead(producer, 1)
        await eventually(lambda: audited == ["once"] and plain == ["once"])
        flaky.failing = False
        assert await producer.requeue_dead("jobs") == 1
        await eventually(lambda: flaky.done == ["once"], limit=10)
        await producer.publish("jobs", "job", "after")  # behind the requeued one
        await eventually(lambda: "after" in audited and "after" in plain and "after" in flaky.done)
        await eventually(lambda: pending(broker, "audit") == 0)
    assert audited == ["once", "after"]
    assert plain == ["once", "after"]
    assert flaky.done == ["once", "after"]


async def test_requeue_and_purge_by_id(broker: Harness) -> None:
    ids = [bury(broker, envelope(n), entry_id=f"{n + 1}-0") for n in range(3)]
    async with handler(broker) as channels:
        assert [e.id for e in await channels.dead_letters("jobs")] == ids
        assert await channels.requeue_dead("jobs", [ids[1], "12345-6"]) == 1
        assert [e.data for e in await channels.dead_letters("jobs")] == [0, 2]
        assert [entry["data"] for entry in log(broker)] == [1]
        assert await channels.purge_dead("jobs", iter([ids[0], "12345-6", ids[0]])) == 1
        assert [e.id for e in await channels.dead_letters("jobs")] == [ids[2]]
        assert await channels.purge_dead("jobs", []) == 0
        assert await channels.requeue_dead("jobs", ()) == 0
        assert await channels.purge_dead("jobs") == 1
        assert await channels.purge_dead("jobs") == 0
        assert await channels.dead_letters("jobs") == []


async def test_many_dead_letters_newest_last_and_all_requeued_in_order(broker: Harness) -> None:
    for n in range(250):
        bury(broker, envelope(n))
    async with handler(broker) as channels:
        assert [e.data for e in await channels.dead_letters("jobs", count=1000)] == list(range(250))
        assert [e.data for e in await channels.dead_letters("jobs", count=3)] == [247, 248, 249]
        assert [e.data for e in await channels.dead_letters("jobs")] == list(range(150, 250))
        assert await channels.requeue_dead("jobs") == 250
        assert await channels.dead_letters("jobs") == []
    assert [entry["data"] for entry in log(broker)] == list(range(250))


async def test_an_undecodable_dead_letter_is_shown_as_it_is_and_stays(broker: Harness) -> None:
    broken = bury(broker, b"{not json")
    fine = bury(broker, envelope("fine"))
    async with handler(broker) as channels:
        letter, good = await channels.dead_letters("jobs")
        assert (letter.id, letter.event, letter.data) == (broken, "", b"{not json")
        assert letter.headers["tidings-group"] == "workers"
        assert (good.id, good.event, good.data) == (fine, "job", "fine")
        assert await channels.requeue_dead("jobs") == 1  # the good one
        assert [e.id for e in await channels.dead_letters("jobs")] == [broken]
        assert await channels.purge_dead("jobs", [broken]) == 1
    assert [entry["data"] for entry in log(broker)] == ["fine"]


async def test_arguments_are_checked_before_any_io() -> None:
    channels = Channels("memory://", namespace="ns", durable=["jobs"])
    for call, match in (
        (channels.dead_letters("plain"), "'plain' is not one"),
        (channels.requeue_dead("plain"), "'plain' is not one"),
        (channels.purge_dead("plain", ["1-0"]), "'plain' is not one"),
        (channels.dead_letters("jobs", count=0), "count must be an int >= 1"),
        (channels.dead_letters("jobs", count=True), "count must be"),  # type: ignore[arg-type]
        (channels.dead_letters("jobs", count=2.0), "count must be"),  # type: ignore[arg-type]
        (channels.requeue_dead("jobs", ["1-0", "not-an-id"]), "dead-letter id must look like"),
        (channels.purge_dead("jobs", [b"x"]), "dead-letter id must look like"),  # type: ignore[list-item]
        (channels.dead_letters(""), "channel name must be a non-empty str"),
    ):
        with pytest.raises(ValueError, match=match):
            await call
    for ids in ("1-0", 5, b"1-0"):
        with pytest.raises(TypeError, match="iterable of dead-letter ids"):
            await channels.requeue_dead("jobs", ids)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable of dead-letter ids"):
            await channels.purge_dead("jobs", ids)  # type: ignore[arg-type]
    for call in (
        channels.dead_letters("jobs"),
        channels.requeue_dead("jobs"),
        channels.purge_dead("jobs", ["1"]),
    ):
        with pytest.raises(RuntimeError, match="not running"):
            await call
    async with channels:
        assert await channels.dead_letters("ns:jobs") == []  # the prefix may be given
    with pytest.raises(RuntimeError, match="closed"):
        await channels.purge_dead("jobs")


# -- on a cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    yield cluster
    cluster.close()


@pytest.mark.redis
@pytest.mark.parametrize(
    "mode", [pytest.param({}, id="classic"), pytest.param({"sharded": "1"}, id="sharded")]
)
async def test_dead_letters_on_a_cluster(cluster: RedisCluster, mode: dict[str, str]) -> None:
    """The dead-letter stream of a plain name lives on its own slot's owner, of a
    hash-tagged one on its channel's: both are read, requeued and purged there."""
    namespace = f"dc{uuid.uuid4().hex[:8]}"
    url = cluster.url(namespace=namespace, **mode)
    names = ["{jobs}", "mail", "sms"]
    options: dict[str, Any] = {
        "durable": names,
        "backoff": FAST,
        "max_deliver": 2,
        "ack_wait": 0.5,
        "retry_backoff": None,
        "publish_timeout": 2.0,
    }
    flaky = Flaky()
    async with Channels(url, **options) as member, Channels(url, **options) as producer:
        for name in names:
            await member.register(name, "*", flaky, group="workers")
            await producer.publish(name, "job", name)
        for name in names:
            [letter] = await dead(producer, 1, name)
            assert (letter.channel, letter.data) == (name, name)
        flaky.failing = False
        assert await producer.requeue_dead("{jobs}") == 1
        assert await producer.requeue_dead("mail", ["1-1"]) == 0  # unknown: ignored
        assert await producer.requeue_dead("mail") == 1
        await eventually(lambda: sorted(flaky.done) == ["mail", "{jobs}"], limit=15)
        assert await producer.purge_dead("sms") == 1
        for name in names:
            assert await producer.dead_letters(name) == []

        async def scan(publisher: Publisher) -> list[str]:
            return await publisher.scan_streams(f"{namespace}:*")

        streams = await runtime_of(producer).connection.query("scan", scan)
    assert {f"{namespace}:{name}" for name in names} <= set(streams)
    for name in ("{jobs}", "mail"):
        key = f"{namespace}:{name}:dead"
        assert cluster.owner_of(key).client().xlen(key) == 0
