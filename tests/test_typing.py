"""User code is type-checked: the handlers' types survive ``async with`` and the API."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

USER_CODE = textwrap.dedent(
    """
    from typing import Any, assert_type

    import tidings


    async def main() -> None:
        async with tidings.open_channels("memory://", namespace="shop") as channels:
            assert_type(channels, tidings.Channels)
            channel = await channels.register("orders", "*", lambda ch, ev, data: None)
            assert_type(channel, tidings.Channel)
            assert_type(await channels.publish("orders", "created", {"id": 1}), int)
            assert_type(channels.stats(), tidings.Stats)
            async with channels.subscribe("orders") as events:
                async for event in events:
                    assert_type(event, tidings.Event[Any])
        async with tidings.create_store().pubsub() as pubsub:
            assert_type(pubsub, tidings.PubSub)
            assert_type(await pubsub.count("a"), dict[str, int])
        await channels.publish(1, "e")  # E: a channel name is a str
    """
)


def test_user_code_type_checks_with_the_handlers_own_types(tmp_path: Path) -> None:
    (tmp_path / "empty.ini").write_text("[mypy]\n")  # not the project's own settings
    (tmp_path / "user.py").write_text(USER_CODE)
    stdout, stderr, _ = mypy_api.run(
        [
            "--config-file",
            str(tmp_path / "empty.ini"),
            "--strict",
            "--no-incremental",
            "--show-error-codes",
            str(tmp_path / "user.py"),
        ]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    # Exactly the one deliberate mistake is found: nothing is Any, nothing else fails.
    assert len(errors) == 1, stdout + stderr
    assert "publish" in errors[0]
    assert "arg-type" in errors[0]
