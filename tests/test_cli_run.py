"""`tidings run MODULE:FUNCTION`, run for real in subprocesses (against a real redis-server
where the application needs one): the sample applications are in tests/cli_worker.py."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from tests.cli_process import Command, publish
from tests.redis_server import RedisServer
from tidings.cli import main

pytestmark = pytest.mark.redis


def worker(redis_server: RedisServer, namespace: str, *args: str, **env: str) -> Command:
    """`tidings run tests.cli_worker:main`, once it says it is ready."""
    command = Command(
        "run",
        *args,
        "tests.cli_worker:main",
        env={"CLI_WORKER_URL": redis_server.url, "CLI_WORKER_NAMESPACE": namespace, **env},
    )
    assert command.line() == "ready"
    return command


@pytest.mark.parametrize(
    ("backend", "signum"),
    [("trio", signal.SIGTERM), ("asyncio", signal.SIGTERM), ("trio", signal.SIGINT)],
    ids=["trio-SIGTERM", "asyncio-SIGTERM", "trio-SIGINT"],
)
def test_a_signal_drains_the_job_in_hand_and_leaves_the_group(
    redis_server: RedisServer, backend: str, signum: int
) -> None:
    namespace = f"run{uuid.uuid4().hex[:8]}"
    key = f"{namespace}:jobs"
    client = redis_server.client(decode_responses=True)
    with worker(redis_server, namespace, "--backend", backend, CLI_WORKER_JOB_SECONDS="1") as app:
        publish(redis_server.url, namespace, "jobs", 1)
        assert app.line() == "started 1"
        [consumer] = client.xinfo_consumers(key, "workers")
        assert consumer["pending"] == 1  # the job is in hand
        app.signal(signum)
        assert app.wait() == 0, app.err
    assert app.stdout == ["ready", "started 1", "done 1"]  # finished, not cancelled
    assert f"tidings: {signal.Signals(signum).name}: draining" in app.err
    assert "Traceback" not in app.err
    # Acknowledged, and the member left its group: nothing waits out ack_wait.
    assert client.xpending(key, "workers")["pending"] == 0
    assert client.xinfo_consumers(key, "workers") == []


def test_what_was_taken_and_not_started_is_handed_back(redis_server: RedisServer) -> None:
    """Another member gets it at once, without waiting out ack_wait (30 s here)."""
    namespace = f"run{uuid.uuid4().hex[:8]}"
    key = f"{namespace}:jobs"
    client = redis_server.client(decode_responses=True)
    with worker(redis_server, namespace, CLI_WORKER_JOB_SECONDS="1") as app:
        publish(redis_server.url, namespace, "jobs", 1, 2)
        assert app.line() == "started 1"
        app.signal(signal.SIGTERM)
        assert app.wait() == 0, app.err
    assert app.stdout == ["ready", "started 1", "done 1"]
    # Job 2 is either still in the log for the group (never taken), or was taken with
    # job 1 and handed back: pending, idle past ack_wait, claimable by anyone now.
    _, claimed, _ = client.xautoclaim(key, "workers", "other", min_idle_time=30_000)
    unread = client.xreadgroup("workers", "other", {key: ">"})
    entries = claimed + [entry for _, stream in unread for entry in stream]
    assert [json.loads(fields["envelope"])["data"] for _, fields in entries] == [2]
    # The worker holds nothing any more (its entry, if kept, goes once idle).
    assert all(
        c["pending"] == 0 for c in client.xinfo_consumers(key, "workers") if c["name"] != "other"
    )


def test_a_second_signal_stops_at_once(redis_server: RedisServer) -> None:
    namespace = f"run{uuid.uuid4().hex[:8]}"
    job = {"CLI_WORKER_JOB_SECONDS": "60", "CLI_WORKER_CLOSE_TIMEOUT": "30"}
    with worker(redis_server, namespace, **job) as app:
        publish(redis_server.url, namespace, "jobs", 1)
        assert app.line() == "started 1"
        app.signal(signal.SIGTERM)
        assert app.line("stderr").startswith("tidings: SIGTERM: draining")
        app.signal(signal.SIGINT)
        # Well within the drain's 30 s (a generous bound, not a measure).
        assert app.wait(timeout=15) == 130
    assert "tidings: SIGINT while draining: stopping now" in app.err
    assert "done 1" not in app.stdout


def test_returns_or_crashes() -> None:
    """Started together (each is a fresh interpreter), then checked."""
    returns = Command("run", "tests.cli_worker:returns")
    crash = Command("run", "--backend", "asyncio", "tests.cli_worker:crash")
    assert returns.wait() == 0, returns.err
    assert (returns.stdout, returns.stderr) == (["returned"], [])
    assert crash.wait() == 1
    # The traceback of the application's code (tidings' frames left out), then one line.
    assert crash.stderr[0] == "Traceback (most recent call last):"
    assert 'cli_worker.py", line' in crash.err
    assert "_runner.py" not in crash.err
    assert crash.stderr[-2:] == [
        "ValueError: boom",
        "tidings: tests.cli_worker:crash raised ValueError: boom",
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.cli_worker:not_async", "it is a plain function, not an async function"),
        ("tests.cli_worker:takes_args", "it takes arguments; tidings run calls it with none"),
        ("tests.cli_worker:missing", "'tests.cli_worker' has no attribute 'missing'"),
        ("tests.cli_worker:main.x", "'tests.cli_worker' has no attribute 'main.x'"),
        ("tests.no_such_module:main", "no module named 'tests.no_such_module'"),
        ("no_such_package.app:main", "No module named 'no_such_package'"),
        ("tests.cli_worker", "'tests.cli_worker' is not MODULE:FUNCTION"),
        ("tests/cli_worker.py:main", "is not MODULE:FUNCTION (like myapp.worker:main)"),
        (":main", "is not MODULE:FUNCTION"),
    ],
)
def test_a_bad_target_is_one_line(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found before anything runs (in-process: nothing is started)."""
    assert main(["run", target]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("tidings: ")
    assert message in line


def test_the_current_directory_is_on_the_path(tmp_path: Path) -> None:
    """As for `python -m`: the console script `tidings` does not put it there, and
    `python -P` (which is how this runs) does not either."""
    (tmp_path / "myapp.py").write_text("async def main():\n    print('ran from cwd')\n")
    command = Command("run", "myapp:main", cwd=str(tmp_path), python=["-P"])
    assert command.wait() == 0, command.err
    assert command.stdout == ["ran from cwd"]


def test_run_takes_no_connection_options() -> None:
    command = Command("--url", "redis://127.0.0.1:1", "run", "tests.cli_worker:returns")
    assert command.wait() == 2
    assert command.stderr[-1] == (
        "tidings: error: --url, --namespace and --timeout do not apply to run: the "
        "application opens its own channels"
    )
    assert command.stdout == []
