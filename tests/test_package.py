"""The package's public face: exports, typing marker, the demo."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tidings


def test_all_matches_the_exports() -> None:
    public = {name for name in dir(tidings) if not name.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(tidings.__path__)}
    assert set(tidings.__all__) == public - modules
    for name in tidings.__all__:
        assert getattr(tidings, name) is not None


def test_every_public_object_is_documented() -> None:
    for name in tidings.__all__:
        assert getattr(tidings, name).__doc__, f"tidings.{name} has no docstring"


def test_errors_share_one_base_and_are_reexported() -> None:
    errors = importlib.import_module("tidings.errors")
    for name in errors.__all__:
        assert getattr(tidings, name) is getattr(errors, name)
        assert issubclass(getattr(errors, name), tidings.TidingsError)


def test_typed_marker_is_shipped() -> None:
    assert (Path(tidings.__file__).parent / "py.typed").exists()


def test_the_demo_runs_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for expected in (
        "connecting -> connected",
        "iterator got Event",
        "'alerts' still has callbacks for ['*'] (the healthy one)",
        "connected -> closed",
    ):
        assert expected in result.stdout


def test_counters_and_stats_have_the_same_fields() -> None:
    from dataclasses import fields

    from tidings.stats import Counters

    assert Counters.__annotations__.keys() == {f.name for f in fields(tidings.Stats)}
    counters = Counters()
    counters.dropped += 2
    assert counters.snapshot() == tidings.Stats(dropped=2)


def test_the_cli_runs_the_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from tidings.cli import main

    assert main(["--url", "memory://cli-demo", "demo"]) == 0
    assert "tidings demo on memory://cli-demo?namespace=demo" in capsys.readouterr().out


def test_the_cli_rejects_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from tidings.cli import main

    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
