"""The `tidings` command, run for real in subprocesses against a real redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.cli_process import PATIENCE, Command, eventually, publish
from tests.redis_server import RedisServer
from tidings.cli import main
from tidings.testing import free_port

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
        (("publish", "--url", "redis://h:notaport", "c", "e", "1"), 2, "bad port"),
        (("publish", "--url", "gopher://x", "c", "e", "1"), 2, "unknown scheme"),
        (("publish", "--url", "redis://:hunter2@127.0.0.1:1", "c", "e", "1"), 1, "cannot connect"),
        (("channels", "--url", "redis://127.0.0.1:1"), 1, "ConnectionRefusedError"),
        (("listen", "--url", "redis://127.0.0.1:1", "c"), 1, "cannot connect"),
        (("dead", "--url", "redis://127.0.0.1:1", "c"), 1, "cannot connect"),
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
    ("args", "text"),
    [
        (
            ("publish", "c", "e", "1", "--timeout", "-1"),
            "argument --timeout: must be a number of seconds > 0, got '-1'",
        ),
        (("--timeout", "0", "channels"), "argument --timeout: must be a number of seconds > 0"),
        (("listen", "c", "--timeout", "nan"), "argument --timeout: must be a number of seconds"),
        (("inspect", "--timeout", "inf"), "argument --timeout: must be a number of seconds"),
        (
            ("dead", "c", "--timeout", "soon"),
            "argument --timeout: expected a number of seconds, got 'soon'",
        ),
        (("dead", "c", "--count", "many"), "argument --count: expected a whole number"),
        (
            ("publish", "c", "e"),
            "DATA is missing: give a JSON value (null for none), or - "
            "to publish each line of stdin",
        ),
        (("publish", "c", "", "1"), "argument EVENT: an event name must not be empty"),
        (("publish", "", "e", "1"), "argument CHANNEL: channel name must be a non-empty str"),
        (("listen", "c", ""), "argument EVENT-GLOB: an event pattern must not be empty"),
        (("--namespace", "a::b", "channels"), "argument --namespace: namespace 'a::b' has"),
        (("listen", "c", "--namespace", ":x"), "argument --namespace: namespace ':x' has"),
        (("channels", ""), "argument PATTERN: a pattern must not be empty"),
        (("listen", "c", "--since", "all"), "--since needs --durable"),
        (("listen", "c", "--group", "g", "--since", "0"), "--since and --group need --durable"),
        (("listen", "c", "--consumer", "me"), "--consumer needs --durable"),
        (
            ("listen", "c", "--durable", "--consumer", "a", "--group", "b"),
            "argument --group: not allowed with argument --consumer",
        ),
        (("listen", "c", "--durable", "--group", ""), "argument --group: a group name must not"),
        (("listen", "c", "--durable", "--consumer", ""), "argument --consumer: a consumer name"),
        (
            ("listen", "c", "--durable", "--since", "yesterday"),
            "argument --since: expected new, all, a stream id like 1700000000000-0 or a time like",
        ),
        (
            ("listen", "c", "--durable", "--since", "2024-05-01T12:00"),
            "argument --since: give the time's zone",
        ),
        (("run",), "the following arguments are required: MODULE:FUNCTION"),
        (("frobnicate",), "invalid choice"),
        (("publish", "orders"), "the following arguments are required: EVENT"),
        (("publish", "orders", "e", "{bad json"), "argument DATA: not valid JSON"),
        (("publish", "c:", "e", "1"), "argument CHANNEL: channel name 'c:' has the delimiter"),
        (("inspect", "c:"), "argument CHANNEL: channel name 'c:' has the delimiter"),
        (("dead",), "the following arguments are required: CHANNEL"),
        (("dead", "c", "--requeue", "--purge"), "not allowed with argument"),
        (("dead", "c", "--id", "1-0"), "--id goes with --requeue or --purge"),
        (("dead", "c", "--purge", "--id", "x"), "argument --id: a stream id must look like"),
        (("dead", "c", "--count", "0"), "argument --count: must be at least 1, got '0'"),
        (("run", "--backend", "curio", "a:b"), "argument --backend: invalid choice: 'curio'"),
    ],
)
def test_usage_errors_name_the_flag_before_any_io(
    args: tuple[str, ...], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked by the parser, in-process (nothing connects: no server is given)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: tidings")
    assert lines[-1].startswith("tidings")
    assert ": error: " in lines[-1]
    assert text in lines[-1], err


@pytest.mark.parametrize(
    "command",
    [(), ("listen",), ("publish",), ("channels",), ("inspect",), ("dead",), ("run",), ("demo",)],
)
def test_help_everywhere(command: tuple[str, ...]) -> None:
    result = tidings(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: tidings")


def test_version() -> None:
    result = tidings("--version")
    assert result.stdout.strip() == "tidings 0.1.0"


def test_stdin_with_bad_json_names_the_line(redis_server: RedisServer) -> None:
    """It stops there, having published the lines before it."""
    result = tidings("publish", "--url", redis_server.url, "c", "e", "-", stdin="1\n\n{oops\n3\n")
    assert_one_line_error(result, 2, "stdin line 3 is not valid JSON: Expecting")
    assert result.stderr.strip().endswith("stopped there (1 published before it)")
    assert result.stdout == "0\n"


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


def test_publish_help_says_what_its_number_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["publish", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "how many subscriber connections (clients) it delivered the event to" in text
    assert "0 means nobody was listening" in text


# -- --timeout bounds connecting, and the error says what timed out ----------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections (the kernel does, into the backlog) and
    never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def test_timeout_bounds_connecting_and_says_what_timed_out(silent_port: int) -> None:
    plain, tls = f"redis://127.0.0.1:{silent_port}", f"rediss://127.0.0.1:{silent_port}"
    hint = {plain: "(is it a TLS port? try rediss://)", tls: "(the server does not speak "
            "TLS? try redis://)"}  # fmt: skip
    # Every command connects the same way (a Channels handler, or a PubSub for
    # `channels`): one of each, and `listen`, which reports the attempt.
    runs = [
        (plain, ("listen", "c")),
        (plain, ("publish", "c", "e", "1")),
        (plain, ("channels",)),
        (tls, ("publish", "c", "e", "1")),
    ]
    with contextlib.ExitStack() as stack:  # started together, stopped whatever happens
        started = [
            (url, stack.enter_context(Command(*args, "--url", url, "--timeout", "1")))
            for url, args in runs
        ]
        for url, command in started:
            assert command.wait() == 1, command.process.args
            assert command.stderr[-1] == (
                f"tidings: no answer from {url}/0 within 1s while connecting {hint[url]}"
            ), command.process.args
            assert "Traceback" not in command.err
    # listen reports the attempt: it gave up after about 1 s (5 s before --timeout
    # bounded it; a generous bound, measured between its own status lines).
    listen = started[0][1]
    [began] = [t for t, line in listen.stamped if line == "tidings: connecting"]
    [ended] = [t for t, line in listen.stamped if line.startswith("tidings: disconnected")]
    assert ended - began < 4


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int, str]]:
    """A redis-server with a plain port and a TLS port: (server, TLS port, CA file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    port = free_port()
    server = RedisServer(
        "--tls-port", str(port), "--tls-cert-file", str(files["cert"]),
        "--tls-key-file", str(files["key"]), "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    yield server, port, str(files["ca"])
    server.close()


def test_a_wrong_tls_setting_is_named(tls_server: tuple[RedisServer, int, str]) -> None:
    server, tls_port, ca = tls_server
    publish = ("publish", "c", "e", "1", "--timeout", "1")
    right = Command(*publish, "--url", f"rediss://localhost:{tls_port}?ssl_ca_certs={ca}")
    plain_to_tls = Command(*publish, "--url", f"redis://127.0.0.1:{tls_port}")
    tls_to_plain = Command(*publish, "--url", f"rediss://localhost:{server.port}?ssl_ca_certs={ca}")
    with right, plain_to_tls, tls_to_plain:
        assert right.wait() == 0, right.err  # the server does speak TLS there
        assert right.stdout == ["0"]
        assert plain_to_tls.wait() == 1
        assert tls_to_plain.wait() == 1
    [line] = plain_to_tls.stderr
    assert line.startswith(f"tidings: cannot connect to redis://127.0.0.1:{tls_port}/0: ")
    assert line.endswith(" (is it a TLS port? try rediss://)")
    [line] = tls_to_plain.stderr
    assert line.startswith(f"tidings: no answer from rediss://localhost:{server.port}/0") or (
        line.startswith(f"tidings: cannot connect to rediss://localhost:{server.port}/0")
    )
    assert line.endswith(" (the server does not speak TLS? try redis://)")


# -- publish - streams stdin --------------------------------------------------------------


def test_publish_streams_stdin_line_by_line(redis_server: RedisServer) -> None:
    """Each line is published, and its count printed, before the next one is written."""
    subscriber = redis_server.client().pubsub()
    subscriber.subscribe("ticks")
    assert subscriber.get_message(timeout=PATIENCE)["type"] == "subscribe"
    try:
        with Command("publish", "--url", redis_server.url, "ticks", "tick", "-", stdin=True) as cmd:
            for n in range(3):
                cmd.write(json.dumps({"n": n}) + ("\n\n" if n == 1 else "\n"))
                assert cmd.line() == "1"  # the subscriber above
                message = subscriber.get_message(timeout=PATIENCE)
                assert message is not None
                assert json.loads(message["data"])["data"] == {"n": n}
            cmd.close_stdin()
            assert cmd.wait() == 0, cmd.err
        assert cmd.stdout == ["1", "1", "1"]
    finally:
        subscriber.close()


# -- listen --durable ---------------------------------------------------------------------


def test_listen_durable_since_all_prints_ids_then_live_events(redis_server: RedisServer) -> None:
    namespace = f"dur{uuid.uuid4().hex[:8]}"
    client = redis_server.client(decode_responses=True)
    publish(redis_server.url, namespace, "orders", 1, 2)
    where = ("--url", redis_server.url, "--namespace", namespace)
    with Command("listen", *where, "orders", "--durable", "--since", "all") as listen:
        got = [json.loads(listen.line()) for _ in range(2)]
        ids = [entry_id for entry_id, _ in client.xrange(f"{namespace}:orders")]
        assert got == [
            {"id": ids[n], "channel": "orders", "event": "job", "data": n + 1} for n in range(2)
        ]
        result = tidings("publish", *where, "--durable", "orders", "job", "3")
        assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr
        live = json.loads(listen.line())
        assert live["data"] == 3
        assert live["id"] == client.xrange(f"{namespace}:orders")[-1][0]
        listen.signal(signal.SIGINT)
        assert listen.wait() == 130
    assert "Traceback" not in listen.err


def test_listen_durable_group_members_share_the_events(redis_server: RedisServer) -> None:
    namespace = f"grp{uuid.uuid4().hex[:8]}"
    key = f"{namespace}:jobs"
    client = redis_server.client(decode_responses=True)
    args = ("listen", "--url", redis_server.url, "--namespace", namespace, "jobs", "--durable")
    # --since all: the group starts at the log's beginning, whichever member creates it.
    members = [Command(*args, "--group", "g", "--since", "all") for _ in range(2)]
    with members[0], members[1]:
        eventually(lambda: client.pubsub_numsub(key)[0][1] == 2, "both members subscribed")
        publish(redis_server.url, namespace, "jobs", *range(20))
        eventually(lambda: sum(len(m.stdout) for m in members) >= 20, "20 events printed")
        # (Not "both got some": a member reading ahead may take all 20 first; Redis 7.0
        # makes a consumer only for a read that returned entries.)
        for member in members:
            member.signal(signal.SIGTERM)
            assert member.wait() == 128 + signal.SIGTERM, member.err
    lines = [json.loads(line) for member in members for line in member.stdout]
    assert sorted(line["data"] for line in lines) == list(range(20))  # each one once
    assert all(line["id"] for line in lines)
    # Each acknowledged once printed; each member left the group on its way out.
    assert client.xpending(key, "g")["pending"] == 0
    assert client.xinfo_consumers(key, "g") == []


def test_listen_durable_consumer_resumes_after_a_restart(redis_server: RedisServer) -> None:
    namespace = f"con{uuid.uuid4().hex[:8]}"
    publish(redis_server.url, namespace, "log", 1, 2)
    where = ("--url", redis_server.url, "--namespace", namespace)
    args = ("listen", *where, "log", "--durable", "--consumer", "reader", "--since", "all")
    with Command(*args) as first:
        assert [json.loads(first.line())["data"] for _ in range(2)] == [1, 2]
        first.signal(signal.SIGTERM)  # it saves its place on its way out
        assert first.wait() == 128 + signal.SIGTERM
    publish(redis_server.url, namespace, "log", 3)
    with Command(*args) as second:  # --since all applies the first time only
        assert json.loads(second.line())["data"] == 3
        second.signal(signal.SIGTERM)
        assert second.wait() == 128 + signal.SIGTERM
    assert [json.loads(line)["data"] for line in second.stdout] == [3]
