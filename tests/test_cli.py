"""The `tidings` command, run for real in subprocesses against a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis


def tidings(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """The error is one line, the last; `listen` reports status lines before it."""
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert text in lines[-1]
    statuses = [line for line in lines[:-1] if not line.startswith("tidings: ")]
    assert statuses == [] or "usage:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def listener(redis_server: RedisServer) -> Any:
    """Start `tidings listen`, wait until it is subscribed, stop it with Ctrl-C."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidings", "listen", "--url", redis_server.url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A test suite started in the background (`make test &`, a CI runner)
            # ignores SIGINT, and a child inherits that: Ctrl-C would never reach it.
            preexec_fn=_interruptible,
        )
        started.append(process)
        client = redis_server.client()
        deadline = time.monotonic() + 20
        channel = (
            args[args.index("--namespace") + 1] + ":" + args[-1]
            if "--namespace" in args
            else args[0]
        )
        while client.pubsub_numsub(channel)[0][1] == 0:
            assert time.monotonic() < deadline, "listen never subscribed"
            time.sleep(0.02)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_listen_prints_json_lines_and_exits_cleanly_on_ctrl_c(
    redis_server: RedisServer, listener: Any
) -> None:
    process = listener("orders", "cre*", "paid")
    for event, data in (("created", '{"id": 1}'), ("shipped", "2"), ("paid", "[3]")):
        result = tidings("publish", "--url", redis_server.url, "orders", event, data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "1\n"
    assert process.stdout is not None
    lines = [json.loads(process.stdout.readline()) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 130
    assert lines == [
        {"channel": "orders", "event": "created", "data": {"id": 1}},
        {"channel": "orders", "event": "paid", "data": [3]},
    ]
    assert "tidings: connected" in err
    assert "Traceback" not in err


def test_publish_reads_stdin_and_honours_namespace(
    redis_server: RedisServer, listener: Any
) -> None:
    process = listener("--namespace", "shop", "orders")
    result = tidings(
        "publish",
        "--namespace",
        "shop",
        "orders",
        "bulk",
        "-",
        stdin='{"n": 1}\n\n{"n": 2}\n',
        env={"TIDINGS_URL": redis_server.url},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    assert process.stdout is not None
    got = [json.loads(process.stdout.readline())["data"] for _ in range(2)]
    assert got == [{"n": 1}, {"n": 2}]


def test_channels_lists_subscribers(redis_server: RedisServer, listener: Any) -> None:
    listener("--namespace", "tbl", "alpha")
    listener("--namespace", "tbl", "alpha")
    listener("--namespace", "tbl", "beta")
    result = tidings("--url", redis_server.url, "channels", "--namespace", "tbl")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["CHANNEL", "SUBSCRIBERS"], ["alpha", "2"], ["beta", "1"]]
    result = tidings("--url", redis_server.url, "channels", "--namespace", "tbl", "b*")
    assert [line.split() for line in result.stdout.splitlines()][1:] == [["beta", "1"]]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("frobnicate",), 2, "invalid choice"),
        (("publish", "orders"), 2, "the following arguments are required: event"),
        (("publish", "orders", "e", "{bad json"), 2, "DATA is not valid JSON"),
        (("publish", "--url", "redis://h:notaport", "c", "e"), 2, "bad port"),
        (("publish", "--url", "gopher://x", "c", "e"), 2, "unknown scheme"),
        (("publish", "--url", "redis://:hunter2@127.0.0.1:1", "c", "e"), 1, "cannot connect"),
        (("channels", "--url", "redis://127.0.0.1:1"), 1, "ConnectionRefusedError"),
        (("listen", "--url", "redis://127.0.0.1:1", "c"), 1, "cannot connect"),
        (("publish", "c:", "e"), 2, "delimiter"),
        (("dead",), 2, "the following arguments are required: channel"),
        (("dead", "c", "--requeue", "--purge"), 2, "not allowed with argument"),
        (("dead", "c", "--id", "1-0"), 2, "--id goes with --requeue or --purge"),
        (("dead", "c", "--purge", "--id", "x"), 2, "--id must look like"),
        (("dead", "c", "--count", "0"), 2, "--count must be at least 1"),
        (("dead", "--url", "redis://127.0.0.1:1", "c"), 1, "cannot connect"),
        (("inspect", "c:"), 2, "delimiter"),
        (("inspect", "--url", "redis://127.0.0.1:1"), 1, "cannot connect"),
    ],
)
def test_failures_are_one_line_with_an_exit_code(
    args: tuple[str, ...], code: int, text: str
) -> None:
    result = tidings(*args)
    assert_one_line_error(result, code, text)
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [(), ("listen",), ("publish",), ("channels",), ("inspect",), ("dead",), ("demo",)],
)
def test_help_everywhere(command: tuple[str, ...]) -> None:
    result = tidings(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: tidings")


def test_version() -> None:
    result = tidings("--version")
    assert result.stdout.strip() == "tidings 0.1.0"


def test_stdin_with_bad_json_names_the_line(redis_server: RedisServer) -> None:
    result = tidings("publish", "--url", redis_server.url, "c", "e", "-", stdin="1\n{oops\n")
    assert_one_line_error(result, 2, "stdin line 2 is not valid JSON")


def test_listen_and_publish_default_to_a_local_redis_not_a_private_hub() -> None:
    """Without --url or $TIDINGS_URL, the store is redis://localhost:6379/0 (a
    memory:// hub is private to the process: publishing there reaches nobody)."""
    env = {key: value for key, value in os.environ.items() if key != "TIDINGS_URL"}
    for command in (("listen", "orders"), ("publish", "orders", "e", "1")):
        result = subprocess.run(
            [sys.executable, "-m", "tidings", *command, "--timeout", "0.5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=env,
        )
        # Either nothing listens on 6379 (the error names the URL), or a local
        # Redis does (listen says where it is connected; then 0.5 s is up for it).
        assert "redis://localhost:6379/0" in result.stderr or result.returncode == 0, result
        assert "memory://" not in result.stderr


def test_listen_ends_quietly_when_its_reader_goes(redis_server: RedisServer, listener: Any) -> None:
    """`tidings listen orders | head -1`: once the pipe closes, it exits 0, quietly."""
    process = listener("orders")
    assert process.stdout is not None
    tidings("publish", "--url", redis_server.url, "orders", "e", "1")
    assert json.loads(process.stdout.readline())["data"] == 1
    process.stdout.close()  # head -1 is done
    deadline = time.monotonic() + 20
    while process.poll() is None:
        assert time.monotonic() < deadline, "listen kept running after its reader left"
        tidings("publish", "--url", redis_server.url, "orders", "e", "2")
    _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in err
    assert "Broken pipe" not in err
    assert "BrokenPipeError" not in err


def _bury(client: Any, key: str, data: Any, group: str = "workers") -> str:
    """A dead letter, as a group member writes it."""
    envelope = json.dumps({"channel": "jobs", "event": "job", "data": data})
    fields = {
        "envelope": envelope,
        "id": "1-0",
        "group": group,
        "consumer": "host-1-abc",
        "deliveries": "3",
        "error": f"RuntimeError: cannot do\n{data!r}",
    }
    return str(client.xadd(f"{key}:dead", fields))


def test_dead_lists_requeues_and_purges(redis_server: RedisServer) -> None:
    namespace = f"dead{uuid.uuid4().hex[:8]}"
    client = redis_server.client(decode_responses=True)
    ids = [_bury(client, f"{namespace}:jobs", n) for n in range(3)]
    where = ("--url", redis_server.url, "--namespace", namespace)
    result = tidings("dead", *where, "jobs")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["ID", "EVENT", "GROUP", "DELIVERIES", "ERROR"]
    assert rows[1:] == [
        [entry_id, "job", "workers", "3", "RuntimeError:", "cannot", "do", str(n)]
        for n, entry_id in enumerate(ids)
    ]
    result = tidings("dead", *where, "jobs", "--requeue", "--id", ids[1], "--id", "9-9")
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr
    [(_, fields)] = client.xrange(f"{namespace}:jobs")
    requeued = json.loads(fields["envelope"])
    assert requeued["data"] == 1
    assert requeued["headers"]["tidings-requeued-for"] == "workers"
    result = tidings("dead", *where, "jobs", "--purge", "--id", ids[0])
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr
    result = tidings("dead", *where, "jobs", "--count", "5")
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ID", ids[2]]
    result = tidings("dead", *where, "jobs", "--purge")
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr
    assert client.exists(f"{namespace}:jobs:dead") == 0


def test_inspect_shows_a_log_its_groups_and_dead_letters(redis_server: RedisServer) -> None:
    namespace = f"insp{uuid.uuid4().hex[:8]}"
    client = redis_server.client(decode_responses=True)
    key = f"{namespace}:jobs"
    ids = [client.xadd(key, {"envelope": json.dumps({"event": "e", "data": n})}) for n in range(3)]
    client.xgroup_create(key, "workers", id="0")
    client.xreadgroup("workers", "host-1-abc", {key: ">"}, count=1)
    for n in range(2):
        _bury(client, key, n)
    client.xadd(f"{namespace}:other", {"envelope": "{}"})
    client.xadd(f"{key}::odd::{{{key}}}::x", {"a": "b"})  # a key of tidings' own: not listed
    client.xadd("elsewhere:jobs", {"envelope": "{}"})  # another namespace
    where = ("--url", redis_server.url, "--namespace", namespace)

    result = tidings("inspect", *where, "jobs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:7] == [
        "channel       jobs",
        f"stream        {key}",
        "length        3",
        f"first id      {ids[0]}",
        f"last id       {ids[2]}",
        "retention     as the publishers declare it",
        "dead letters  2",
    ]
    rows = [line.split() for line in lines[7:] if line]
    assert rows[0] == ["GROUP", "CONSUMERS", "PENDING", "LAG", "LAST-DELIVERED"]
    assert rows[1] == ["workers", "1", "1", "2", ids[0]]
    assert rows[2] == ["GROUP", "CONSUMER", "PENDING", "IDLE"]
    assert rows[3][:3] == ["workers", "host-1-abc", "1"]
    assert rows[3][3].endswith("s")

    result = tidings("inspect", *where)
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["CHANNEL", "LENGTH", "GROUPS", "DEAD"],
        ["jobs", "3", "1", "2"],
        ["other", "1", "0", "0"],
    ]

    result = tidings("inspect", *where, "nothing")
    assert_one_line_error(result, 1, f"no log at '{namespace}:nothing'")
