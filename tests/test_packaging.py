"""The built wheel installs cleanly in a fresh virtual environment and works."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_and_sdist(tmp_path: Path) -> None:
    # Built from a copy: a build writes tidings.egg-info into its source tree, and
    # one left in the checkout makes pytest rewrite the package's own modules.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "site", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("tidings-0.1.0-*.whl")
    (sdist,) = dist.glob("tidings-0.1.0.tar.gz")
    assert "tidings/py.typed" in zipfile.ZipFile(wheel).namelist()
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert "tidings-0.1.0/tidings/py.typed" in names
    assert "tidings-0.1.0/LICENSE" in names
    # The tests run from the sdist: their fixtures and helpers come along.
    for name in ("conftest.py", "helpers.py", "redis_server.py", "fake_redis.py"):
        assert f"tidings-0.1.0/tests/{name}" in names
    assert "tidings-0.1.0/Makefile" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    check = (
        "import pathlib, tidings, anyio\n"
        "assert (pathlib.Path(tidings.__file__).parent / 'py.typed').exists()\n"
        "async def main():\n"
        "    async with tidings.open_channels() as ch:\n"
        "        assert await ch.publish('c', 'e', 1) == 0\n"
        "anyio.run(main, backend='trio')\n"
        "print(tidings.__version__)\n"
    )
    result = subprocess.run(
        [str(python), "-c", check], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"
    version = subprocess.run(
        [str(venv / "bin" / "tidings"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.strip() == "tidings 0.1.0"


def test_the_readme_renders_on_the_package_index() -> None:
    """The README is the package's page on the index, away from the repository:
    no relative link or image, which would be broken there."""
    import re

    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", readme)
    relative = [t for t in targets if not t.startswith(("http://", "https://", "#"))]
    assert relative == []
    assert "![" not in readme or all(
        t.startswith("https://") for t in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    )
